"""The Pallas kernels lower to Triton for a CUDA GPU (checked here on CPU: lowering needs no GPU).

Interpret mode does not check Triton's own rules (power-of-two block sizes, no gathers, dot shapes); the lowering
does. Compiling the lowered module to PTX still needs a GPU: run the kernels there when one is available.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import triton as pltriton

from toolkit.kernels import dispatch, kivi, tmac


@pytest.fixture
def triton_params(monkeypatch):
  # jax.default_backend() is "cpu" here; take the GPU branch to lower as a GPU run would.
  monkeypatch.setattr(
    dispatch,
    "compiler_params",
    lambda interpret: pltriton.CompilerParams(num_warps=4, num_stages=1),
  )


def lower_for_cuda(fn, *args) -> str:
  return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def test_default_is_triton_on_gpu_only():
  assert dispatch.compiler_params(interpret=True) is None
  assert dispatch.compiler_params(interpret=False) is None  # this machine has no GPU


@pytest.mark.parametrize("bits", [2, 4, 16])
def test_kivi_decode_attention_lowers_to_triton(triton_params, bits):
  cache = kivi.init_cache(
    (2, 4), capacity=256, channels=128, bits=bits, group_size=32, residual=64, scale_dtype="float16"
  )
  text = lower_for_cuda(lambda q, c: kivi.decode_attention_pallas(q, c, interpret=False), jnp.zeros((2, 4, 128)), cache)
  assert "kivi_decode_attention" in text


@pytest.mark.parametrize("bits,n,int8_tables", [(1, 1, False), (3, 32, False), (4, 1, True)])
def test_tmac_matmul_lowers_to_triton(triton_params, bits, n, int8_tables):
  codes = jnp.asarray(np.random.default_rng(0).integers(0, 2**bits, (256, 512)), jnp.int32)
  packed = tmac.preprocess(codes, jnp.ones((256, 4)), jnp.zeros((256, 4)), bits=bits, group_size=128)
  assert lower_for_cuda(lambda x, p: tmac._matmul_pallas(x, p, int8_tables, False), jnp.zeros((n, 512)), packed)


def test_one_dispatch_rule():
  assert dispatch.IMPLS == ("pallas", "xla")
  assert dispatch.check_impl(None) == dispatch.default_impl() == "xla"  # this machine has no GPU
  assert dispatch.default_interpret(None) is True and dispatch.default_interpret(False) is False
  with pytest.raises(ValueError, match="`impl` must be one of"):
    dispatch.check_impl("cuda")
  for bad in (3, 2.0, True, "2"):
    with pytest.raises(ValueError, match="`bits` must be one of"):
      dispatch.check_bits(bad, (2, 4, 8))


@pytest.mark.parametrize("bad", ["false", 0, 1.0, jnp.bool_(True)[None]])
def test_dispatch_bad_interpret(bad):
  # bool() would have taken the string "false" for True and picked interpret mode without a word.
  with pytest.raises(TypeError, match="`interpret` must be None or a bool"):
    dispatch.default_interpret(bad)
  with pytest.raises(TypeError, match="`interpret` must be a bool"):
    dispatch.compiler_params(bad)


def test_dispatch_compiler_params_bad_unresolved_interpret():
  # None is resolved by default_interpret first; compiler_params(None) would read it as "compiled".
  with pytest.raises(TypeError, match="`interpret`"):
    dispatch.compiler_params(None)
  assert dispatch.default_interpret(np.bool_(False)) is False and dispatch.compiler_params(np.bool_(True)) is None
