"""A stand-in experiment that never finishes in time: reproduce must stop it and carry on."""

import time

if __name__ == "__main__":
  time.sleep(600)
