"""Every notebook executes top to bottom at its smoke size (TOOLKIT_SMOKE=1) and prints what it claims."""

import glob
import os

import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def execute(path: str) -> str:
  """Runs the notebook in a fresh kernel from the repository root; returns the text it printed."""
  nb = nbformat.read(path, as_version=4)
  os.environ["TOOLKIT_SMOKE"] = "1"
  os.environ["MPLBACKEND"] = "Agg"
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()
  return "".join(
    output.get("text", "") for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
  )


def check_ftwt(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:"))

  # Oracles: the mass criterion equals the authors' sort-and-cumsum loop; uniform heatmaps keep floor(τ C); τ = 1 keeps
  # every live channel; the FLOPs counter equals a hand count; the mask loss never reaches the backbone when decoupled.
  assert number("mass target mismatches vs the authors' sort-and-cumsum loop:") == 0
  assert number("uniform heatmaps, max |kept - floor(τ C)|:") == 0
  assert "τ = 1 keeps every live channel: True" in text
  assert number("FLOPs counter vs hand count, max abs error:") == 0
  assert number("decoupled: backbone gradient change from the mask loss:") == 0
  assert number("joint: backbone gradient change from the mask loss:") > 1e-3  # the joint mode (control) does reach it
  # The estimate before training falls as τ grows and is 0 at τ = 1.
  estimates = [number(f"τ = {t}: estimated FLOPs reduction") for t in ("0.8", "0.9", "0.95", "1")]
  assert estimates[0] > estimates[1] > estimates[2] > estimates[3] == 0 and estimates[0] > 0.4
  # The headline run: FTWT prunes, and the static control gets at least FTWT's FLOPs (no more reduction than it).
  measured = number("measured FLOPs reduction")
  static = float(text.split("static L1 (keep")[1].split("FLOPs reduction")[1].split()[0])
  assert 0.2 < measured < 1 and static <= measured + 1e-6
  assert 0 <= number("FTWT: test accuracy") <= 1 and 0.5 <= number("FTWT: predictor accuracy") <= 1
  assert number("dense test accuracy:") > 0.9


def check_grokking(text: str) -> None:
  # The float32 collapse point of the single-sample demo lies in the window predicted from the mantissa.
  z = float(text.split("first z with softmax loss exactly 0 (float32):")[1].split()[0])
  assert 16.6 <= z <= 21.4
  assert "(c) softmax + ⊥AdamW: train acc" in text


def check_sinkhorn_newton_sparse(text: str) -> None:
  lines = {line.split(":")[0]: line for line in text.splitlines() if "iterations," in line}
  sns_iters = int(lines["SNS"].split(":")[1].split()[0])
  sinkhorn_iters = int(lines["ott Sinkhorn"].split(":")[1].split()[0])
  assert "converged True" in lines["SNS"] and "converged True" in lines["ott Sinkhorn"]
  assert sinkhorn_iters >= 20 * sns_iters
  # The two solvers find the same plan.
  assert float(text.split("max |P_SNS - P_Sinkhorn| =")[1].split()[0]) < 1e-6


def check_matrix_completion(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:"))

  def error_after(name: str) -> float:
    return float(text.split(f"{name}: relative error ‖UVᵀ − M‖/‖M‖ after")[1].split("iterations:")[1].split()[0])

  # Oracles: the exact half-step is per-column least squares (numpy lstsq); CG converges to it (exact after k = 4).
  assert number("exact half-step vs numpy lstsq per column, max relative error:") < 1e-10
  cg = [number(f"CG steps {i}: max |approx - exact| =") for i in (1, 2, 3)]
  assert cg[0] > cg[1] > cg[2] > 0
  assert number("approx half-step (20 CG steps) vs exact, max abs error:") < 1e-10
  # Recovery: approximate half-steps reach the exact solver's error; the cold-start control (same CG steps from
  # zero) stalls far above it.
  exact, approx, cold = error_after("exact"), error_after("approx"), error_after("cold start")
  assert exact < 1e-4 and approx < 1e-4 and approx < 3 * exact
  assert cold > 100 * approx
  # Timing is printed for reading only (a shared CPU is noisy): both fits are present.
  assert "exact: fitted time exponent in k:" in text and "approx: fitted time exponent in k:" in text


def check_monge_gap(text: str) -> None:
  values = {}
  for line in text.splitlines():
    if "Monge gap" in line and "floor" in line:
      name, rest = line.split(":", 1)
      values[name] = [float(w.rstrip(",")) for w in rest.split() if w.rstrip(",").replace(".", "").isdigit()]
  (gap_t, floor_t), (gap_s, _) = values["translation"], values["shuffle"]
  assert abs(gap_t - floor_t) <= 1e-3 * floor_t  # an optimal map sits at ε log n
  assert gap_s > 50 * floor_t
  uvp = {
    line.split(":")[0]: float(line.split(":")[1].strip().rstrip("%"))
    for line in text.splitlines()
    if line.startswith("L2-UVP ")
  }
  assert uvp["L2-UVP with Monge gap"] < uvp["L2-UVP fitting only"]


def check_feynman_kac_correctors(text: str) -> None:
  def after(label: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(label))
    return [
      float(w.strip("[](),"))
      for w in line[len(label) :].replace(",", " ").split()
      if w.strip("[](),").lstrip("-").replace(".", "", 1).replace("e-", "", 1).isdigit()
    ]

  # The score-only weight equals the master formula by autodiff (float64).
  assert after("max |G_scores - G_autodiff| (float64):")[0] < 1e-9
  # Annealing to β = 2: exact E[x1] = 1.636; FKC lands on it, the plain annealed score does not (≈ 0.23).
  exact, fkc_mean, naive = after("annealing β = 2, E[x1]:")
  assert abs(exact - 1.636) < 1e-3 and abs(fkc_mean - exact) < 0.15 and abs(naive - exact) > 1.0
  exact_z, fkc_z = after("annealing β = 2, log Z:")[:2]
  assert abs(exact_z + 0.828) < 1e-3 and abs(fkc_z - exact_z) < 0.6
  fkc_err, naive_err = after("product, covariance relative error:")
  assert fkc_err < 0.08 and naive_err > 0.15
  exact_z, fkc_z = after("product, log Z:")
  assert abs(fkc_z - exact_z) < 0.5
  # Guidance w = 3: E|x|² = 3.08 exactly, plain CFG ≈ 3.57.
  exact, fkc_m2, naive = after("CFG w = 3, E|x|^2:")
  assert abs(exact - 3.08) < 1e-3 and abs(fkc_m2 - exact) < 0.15 and naive - exact > 0.3
  exact_z, fkc_z = after("CFG w = 3, log Z:")
  assert abs(exact_z - 4.256) < 1e-3 and abs(fkc_z - exact_z) < 0.5


def check_kde_high_dim(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",;"))

  # The estimator: scikit-learn in d = 3, a float64 logsumexp in d = 100 (float32 estimate), ∫ ρ̂ = 1.
  assert number("max |log ρ̂ − sklearn| (d = 3):") < 1e-4
  assert number("max relative error vs float64 brute force (d = 100, float32):") < 1e-5
  assert abs(number("integral of ρ̂ (d = 2):") - 1.0) < 0.015
  # The thresholds solve I_2(h_CLT) = α.
  assert number("max |I_2(h_CLT) − α|:") < 1e-5
  # Measured condensation threshold within 20% of h_G at the smoke size (log n = 8; finite-size shift ~ +7%).
  assert abs(number("h_G relative error:")) < 0.2
  assert number("participation at h_G/2:") > 0.5 and number("at 1.5 h_G:") < 0.1
  # The KL optimum lies below h_CLT; in the classical regime (d = 2) the same measurement lies far above it.
  assert number("KL-optimal / h_CLT:") < 1.0
  assert 1.0 < number("control (d = 2, α = 4.00) KL-optimal / h_CLT:")


def check_halfspace_tester(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0])

  # Gaussian oracle: band mass 2Φ(σ) − 1 and in-band covariance I on w^⊥.
  assert number("band mass max z-score:") < 4.5
  assert number("in-band covariance max |C − I|:") < number("sampling scale 4·√(2/m):")
  # The spike marginal matches the Gaussian moments of degree <= 4 and its band-mass closed form, but not the mass.
  assert number("spike max |moment − Gaussian| (k <= 4):") < 0.1
  assert number("spike band mass closed form vs empirical, max abs diff:") < 0.005
  assert number("spike band mass ratio at σ = 0.1:") > 3.5
  # Gaussian accepted with small excess error; the spike fools the global test, not the band tests.
  assert number("Gaussian accept rate:") >= 0.85
  assert number("Gaussian max excess error:") < 0.02
  assert number("spike accept rate:") == 0.0
  assert number("spike global-only accept rate:") >= 0.85
  assert number("spike mean excess error:") > 2 * number("Gaussian mean excess error:")


def check_dual_head_kd(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(","))

  # The losses against their closed forms and brute force (float64).
  assert number("BinaryKLNorm vs T^2 sum log cosh, max abs error:") < 1e-9
  assert number("BinaryKLNorm vs Bernoulli(1/2) form, max abs error:") < 1e-9
  assert number("BinaryKL vs brute-force Bernoulli KL, max abs error:") < 1e-9
  assert number("KD vs scipy KL of softened probabilities, max abs error:") < 1e-9
  assert number("BinaryKLNorm shift invariance, max change:") < 1e-4
  assert number("BinaryKL after a shift of +3 on equal logits:") > 0.1
  # Alignment leaves no conflict and touches nothing that did not conflict.
  assert number("smallest cosine after alignment (200 random pairs):") > -1e-6
  assert "non-conflicting pairs left unchanged: True" in text
  # The cached teacher and every student arm learned; under DHKD each loss reaches only its own head.
  assert number("teacher test accuracy:") > 0.8
  for arm in ("CE", "CE + KD", "CE + BinaryKL (one head)", "DHKD", "DHKD + GA"):
    assert number(f"{arm}: test accuracy") > 0.3
  dhkd_line = text.split("DHKD: test accuracy")[1].split("\n")[0]
  assert "head cosine +0.000" in dhkd_line


def check_light_sb(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip("%"))

  # The closed-form Gaussian bridge is the oracle: S* satisfies Σ1 = S*Σ0S* + εS*, and LightSB (K = 1, full S)
  # trained on samples recovers S* and r*.
  assert number("identity Σ1 = S*Σ0S* + εS*, max abs error:") < 1e-5
  assert number("recovered S* relative error:") < 0.03
  assert number("recovered r* error:") < 0.05
  # The SDE with the closed-form drift has the bridge's covariance at t = ½ (z-score of the worst entry).
  assert number("SDE marginal covariance at t = 0.5, max z-score:") < 4.5
  # ott's Sinkhorn plan has the closed-form cross-covariance C with ott's epsilon = 2ε, and not with ε.
  assert number("ott plan cross-covariance error, epsilon = 2ε:") < 0.06
  assert number("ott plan cross-covariance error, epsilon = ε:") > 0.08
  assert "converged False" not in text
  # The benchmark: cBW-UVP below 1% and near the floor of the true plan sampled the same way.
  cbw = number("cBW-UVP (d = 2, ε = 1):")
  floor = number("cBW-UVP floor (true plan, sampled alike):")
  assert 0 < floor < 0.3
  assert 0.5 * floor < cbw < 1.0


def check_ppp(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:;"))

  # The validation statistics against scikit-learn (ARI; BIC and log-likelihood of the same mixture).
  assert number("ARI vs scikit-learn, abs error:") < 1e-5
  assert number("BIC vs scikit-learn, relative error:") < 1e-5
  assert number("log-likelihood vs scikit-learn, relative error:") < 1e-5
  # PPP (our reconstruction) finds the 5 blobs without being told k, matching the truth and sklearn's GMM given k.
  assert "clusters found: 5 (truth 5)" in text
  assert number("PPP ARI to the truth:") > 0.95
  assert number("PPP ARI to scikit-learn GaussianMixture (given k):") > 0.95
  # Repeatability: PPP's seed-to-seed ARI >= 0.95, both plain k-means controls (wrong and right k) below it.
  assert number("k right fraction:") >= 0.9
  ppp_ari = number("PPP (ours): seed-to-seed ARI")
  assert ppp_ari >= 0.95
  assert number("plain k-means, wrong k: seed-to-seed ARI") < min(0.95, ppp_ari)
  assert number("plain k-means, right k: seed-to-seed ARI") < min(0.95, ppp_ari)


def check_presto(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:"))

  # The limits against independent oracles: statsmodels' proportional odds, closed-form intercept-only fit.
  assert number("max |Δβ|:") < 1e-4 and number("max |Δα|:") < 1e-4
  assert "PO limit: differences exactly zero: True" in text
  assert number("max |α - logit(cum. freq.)|:") < 1e-6
  assert "all converged True" in text
  # The simulation at smoke size (4 fixed replications; the paired CIs are the experiment's claims): PRESTO's mean
  # rare-class MSE below logistic regression's, proportional odds' and the unpenalised control's.
  presto_mse = number("mean rare-class MSE PRESTO:")
  assert 0 < presto_mse < min(number(f"mean rare-class MSE {k}:") for k in ("Logit", "PO", "lambda0"))
  assert "MSE(PRESTO) - MSE(Logit): [" in text


def check_paris_particle_gibbs(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(":;,"))

  # The RTS smoother is the oracle: PaRIS at N = 16 is clearly biased, PPG at N = 16 is not.
  assert number("PaRIS N = 16 bias z-score:") < -2.5
  assert number("PPG N = 16 |bias| z-score:") < 3.0
  # Learning driven by PPG lands on the Kalman MLE; driven by PaRIS at the same N it does not.
  assert number("PPG-driven max |θ − θ_MLE|:") < 0.06
  assert number("PaRIS-driven max |θ − θ_MLE|:") > 0.15


def check_kivi(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",x"))

  # The paper's finding on keys with outlier channels: per-channel grouping beats per-token grouping.
  assert number("keys per channel:") < 0.8 * number("keys per token:")
  # Pallas (interpret) and XLA decode attention are the dequantize-then-einsum reference; 16 bits is exact.
  assert number("max |Pallas - reference|:") < 1e-4 and number("max |XLA - reference|:") < 1e-4
  assert number("max |16-bit cache - exact attention|:") < 1e-5
  assert abs(number("ratio") - 256 / 48) < 0.01
  # Through the LM, the 16-bit KIVI cache reproduces the exact cache.
  assert number("KIVI-16 (no quantization): perplexity") == number("fp: perplexity")
  assert float(text.split("KIVI-16 (no quantization):")[1].split("max |Δ log p|")[1].split()[0]) < 1e-4


def check_tmac(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0])

  # The ±1 table is antisymmetric, its 8 odd entries rebuild it exactly, and T' = 2T − Σx.
  assert number("mirror: max |T'[15 - p] + T'[p]| =") == 0
  assert number("8-entry reconstruction: max error =") == 0
  assert number("T' = 2T − Σx: max error =") == 0
  # The table lookup equals dequantize-then-matmul: exactly in integers, to float rounding otherwise.
  for bits in (1, 2, 3, 4):
    assert number(f"{bits}-bit integer weights and activations: max |LUT - dequantize-then-matmul| =") == 0
  assert number("float weights: relative error LUT vs dequantize-then-matmul =") < 1e-5
  assert number("Pallas (interpret) vs XLA: max relative difference =") < 1e-5
  assert number("int8 tables: NMSE =") < 5e-4
  # One table pass per bit-plane: lookups exactly proportional to the bit width (times are too noisy to assert).
  assert text.split("lookup ratios to 1 bit:")[1].split()[:4] == ["1", "2", "3", "4"]
  assert "LUT time vs bits: slope" in text


def check_zeroquant(text: str) -> None:
  def number(label: str, after: str = "") -> float:
    rest = text.split(after)[1] if after else text
    return float(rest.split(label)[1].split()[0].rstrip(",:("))

  # RTN: every weight within half a step of its group's grid; per-group beats per-row at every width.
  assert number("max |w - w_hat| / (s/2):") <= 1.0 + 1e-5
  for bits in (3, 4, 8):
    label = f"RTN {bits}-bit weight MSE:"
    assert number("per group of 32", label) < number("per row", label)
  # GPTQ beats RTN on a layer with correlated inputs, and is RTN when XᵀX ∝ I.
  for bits in (4, 3):
    label = f"layer output error W{bits} g32:"
    assert number("GPTQ", label) < number("RTN", label)
  assert number("max |GPTQ - RTN| with X^T X = n I:") < 1e-5
  # LoRC: Eckart–Young (the residual is the SVD tail) and the error falls with the rank.
  for name in ("RTN", "GPTQ"):
    label = f"LoRC rank 8 on {name} W3:"
    resid, tail = number("|E - UV|_F^2 =", label), number("tail sum sigma_i^2 =", label)
    assert abs(resid - tail) <= 1e-4 * tail
    line = next(line for line in text.splitlines() if line.startswith(f"{name} W3 output error with LoRC"))
    errors = [float(v) for v in line.split(":")[1].split(",")]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.7 * errors[0]
  # The language model: 8-bit weights are near lossless, 3-bit RTN is not better than fp32.
  fp = number("perplexity fp32:")
  assert abs(number("perplexity RTN W8:") / fp - 1) < 0.01 and abs(number("perplexity GPTQ W8:") / fp - 1) < 0.01
  assert number("perplexity RTN W3:") > fp
  for name in ("RTN", "GPTQ", "RTN + LoRC", "GPTQ + LoRC"):
    for bits in (8, 4, 3):
      assert 1.0 < number(f"perplexity {name} W{bits}:") < 2 * fp


def check_double_descent(text: str) -> None:
  def number(label: str, after: str = "") -> float:
    rest = text.split(after, 1)[1] if after else text
    return float(rest.split(label)[1].split()[0].rstrip(","))

  # Gradient descent equals its closed form per singular direction; min-norm equals lstsq.
  assert number("max |GD - closed form| (float64):") < 1e-8
  assert number("max |min-norm - lstsq|:") < 1e-8
  assert number("condition number peaks at P/N =") == 1.0
  # The peak iff a low training loss at P = N: min-norm peaks, early-stopped GD does not.
  assert number("min-norm: train loss at P = N") < 0.01 and number("peak height", "min-norm:") > 2
  assert number("GD 100 steps: train loss at P = N") > 0.05 and number("peak height", "GD 100 steps:") < 1.1


def check_likelihood_displacement(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0])

  # CHES oracles: identical responses score 0, orthogonal sums −‖S⁺‖², LN-CHES = CHES/|y|² at equal lengths.
  assert number("CHES(y, y), max abs:") < 1e-4
  assert number("orthogonal sums, max |CHES + |S+|^2|:") < 1e-3
  assert number("max |LN-CHES - CHES/|y|^2| at equal lengths:") < 1e-5
  # The linear toy: the closed-form d/dt log π(y⁺) is the finite difference; No ≻ Never hands the mass to Yes, a far
  # dispreferred token does not.
  assert number("closed form vs finite difference, max rel error:") < 1e-4
  assert number("toy pi(Yes) before:") < 0.05 and number("after:") > 0.5
  assert number("toy pi(No) after / before:") < 0.5
  assert number("control pi(Yes) after:") < 0.5
  # The LM's hidden states are the lm_head input.
  assert number("max |hidden @ lm_head - logits|:") < 1e-4
  assert -1 <= number("one-step Spearman(CHES, drop):") <= 1


def check_topk_moe(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:"))

  # numpyro's dense softmax MoE is the oracle at K = k; the sampler's expert frequencies are the top-K softmax.
  assert number("K = k vs numpyro softmax MoE, max abs log-density error:") < 1e-5
  assert number("sampled expert frequencies, max z-score:") < 5.0
  assert number("draws from unselected experts:") == 0
  # D1 vanishes at G*, is invariant to permutation and gating translation, which leave the density unchanged.
  assert number("D1(G*, G*):") < 1e-6
  assert number("D1 invariance, abs change:") < 1e-4
  assert number("the translated model's density, max abs change:") < 1e-4
  # The exact-specified MLE: D1 falls at about n^(-1/2) (wide band at the smoke size: 3 sizes x 4 replications).
  assert -0.8 < number("exact-specified D1 log-log slope:") < -0.3
  # Over-specified: the rule asks for K = 3; K = 2 stalls far above the K = 3 fit.
  assert number("Voronoi-cardinality rule: K >=") == 3
  assert number("Hellinger ratio K too small / K at the rule, largest n:") > 2


def check_over_optimisation(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0])

  # Closed forms: at π = π_ref DPO = log 2, IPO = 1/(4β²), hinge = 1; dDPO/dh = −β σ(−βh); uniform and one-hot
  # top-k mass and entropy.
  for label in (
    "DPO at init minus log 2, max abs:",
    "IPO at init minus 1/(4β²), max abs:",
    "hinge at init minus 1, max abs:",
    "DPO gradient vs -β σ(-β h), max abs error:",
    "uniform: mass minus k/V:",
    "uniform: entropy minus log k:",
    "one-hot: mass minus 1:",
    "one-hot: entropy:",
  ):
    assert number(label) < 1e-6, label
  # SFT learned the task (a uniform content token scores 1/3), and DPO's margin grows from 0.
  assert number("SFT held-out gold reward:") > 0.5
  assert number("λ=0 margin start") == 0.0 and float(text.split("λ=0 margin start")[1].split()[2]) > 1.0
  # The NLL term raises the chosen likelihood; the top-k entropy falls without it.
  start, end = (float(v) for v in text.split("λ=1 chosen log-likelihood start")[1].split()[0:3:2])
  assert end > start
  start, end = (float(v) for v in text.split("λ=0 top-4 entropy start")[1].split()[0:3:2])
  assert end < start


def check_sgd_noise(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(","))

  assert abs(number("E phi^2 of the normalised relu:") - 1.0) < 1e-4
  assert number("max |centred output| at init:") == 0.0
  # Full batch is gradient descent: the batch key does not matter; the stop is at exactly zero hinge loss.
  assert number("full batch, two batch keys, max |w difference|:") < 1e-5
  steps = text.split("full batch, steps to stop:")[1].split()[:2]
  assert steps[0] == steps[1]
  assert number("train hinge loss at stop:") == 0.0 and number("min margin:") >= 1.0
  # T is the control parameter: equal weight change at T = 2 for B = 4 and 16; 16× the temperature moves it.
  dw4, dw16, dw_hot = (number(f"{label}: mean log dw =") for label in ("T=2, B=4", "T=2, B=16", "T=32, B=16"))
  assert abs(dw4 - dw16) < 0.4 and dw_hot - dw16 > 1.5
  # Lazy limit: the relative weight change falls as 1/α.
  ratios = text.split("weight change ratio per 10x alpha:")[1].split()[:2]
  assert all(7 < float(r) < 13 for r in ratios)
  assert "P = 64: T_c per seed" in text and "alpha = 100: test error" in text


def check_lottery_jackpot(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0])

  # Oracles: numpy's global threshold, the straight-through gradient ∂L/∂(W ⊙ m) ⊙ W, exact sparsity, frozen weights.
  assert number("magnitude mask mismatches vs numpy threshold:") == 0
  assert number("straight-through gradient max abs error:") < 1e-6
  assert "initial mask equals the magnitude mask: True" in text
  assert number("magnitude init: max sparsity drift (entries):") == 0
  assert number("random init: max sparsity drift (entries):") == 0
  assert number("kept weights that differ from the pretrained ones:") == 0
  # The search from the magnitude mask beats the mask it starts from and the random-init search at equal budget.
  assert number("dense test accuracy:") > 0.95
  mag_before = number("magnitude init: mask accuracy before search")
  jackpot = number(f"magnitude init: accuracy after {text.split('accuracy after ')[1].split()[0]} search epochs")
  random_after = number(f"random init: accuracy after {text.split('accuracy after ')[1].split()[0]} search epochs")
  assert number("random init: mask accuracy before search") < 0.2 < mag_before < jackpot - 0.1
  assert jackpot > random_after


def check_odil(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(","))

  # The discretisation against closed forms: exact conservation, second order in time, zero residual of a CN run.
  assert number("mass drift with rho = 0 (float64):") < 1e-10
  ratios = [float(w) for w in text.split("logistic error ratio when dt halves:")[1].split()[:2]]
  assert all(3.6 < r < 4.4 for r in ratios)
  assert number("max |CN residual| of a forward run (float64):") < 1e-9
  assert number("loss at the forward solution:") < 1e-15  # all terms but the CSF one
  assert number("gradient vs finite differences, relative error:") < 1e-5
  # The synthetic patient: the fit improves on its start, and its 10% contour beats the uniform margin.
  rmse_line = text.split("RMSE of u(T): GliODIL")[1].split("\n")[0]
  assert float(rmse_line.split()[0].rstrip(",")) < float(rmse_line.split("initial guess")[1].split()[0])
  margin = number("Dice@10% outside the lesion, uniform margin of equal area:")
  assert number("Dice@10% outside the lesion, GliODIL:") > margin
  assert number("relative error rho:") < 0.3


def check_rom_cluster(text: str) -> None:
  def number(label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",:"))

  # Exact identities: the rank-one projection error is ‖u‖ sin∠(u, v); POD errors are the discarded σ².
  assert number("identity ‖u − Π_v u‖/‖u‖ = sin∠(u, v), max abs error:") < 1e-5
  assert number("sign and scale invariance, max change:") < 1e-5
  assert number("Eckart-Young relative error:") < 1e-4
  # Grassmann distances against scipy; the solvers against closed forms.
  assert number("principal angles vs scipy, max abs error:") < 1e-5
  assert number("advection vs exact shifted pulse, max abs error:") < 1e-5
  assert number("Burgers vs Cole-Hopf, max relative error:") < 1e-3
  # Burgers with sign and scale changes: sine k-medoids beats Euclidean k-means (the control) and global POD.
  sine = number("sine k-medoids: mean held-out error")
  euclid = number("Euclidean k-means: mean held-out error")
  assert sine < euclid and sine < number("global POD (K = 1): mean held-out error")
  # The proxy criterion: exactly 1 for one cluster, and lower for the sine partition than for the Euclidean one.
  assert abs(number("criterion with one cluster:") - 1.0) < 1e-5
  assert number("sine k-medoids: criterion η") < min(1.0, number("Euclidean k-means: criterion η"))


CHECKS = {
  "double_descent.ipynb": check_double_descent,
  "dual_head_kd.ipynb": check_dual_head_kd,
  "feynman_kac_correctors.ipynb": check_feynman_kac_correctors,
  "ftwt.ipynb": check_ftwt,
  "grokking.ipynb": check_grokking,
  "kde_high_dim.ipynb": check_kde_high_dim,
  "halfspace_tester.ipynb": check_halfspace_tester,
  "kivi.ipynb": check_kivi,
  "light_sb.ipynb": check_light_sb,
  "lottery_jackpot.ipynb": check_lottery_jackpot,
  "ppp.ipynb": check_ppp,
  "presto.ipynb": check_presto,
  "rom_cluster.ipynb": check_rom_cluster,
  "likelihood_displacement.ipynb": check_likelihood_displacement,
  "matrix_completion.ipynb": check_matrix_completion,
  "monge_gap.ipynb": check_monge_gap,
  "gliodil.ipynb": check_odil,
  "over_optimisation.ipynb": check_over_optimisation,
  "paris_particle_gibbs.ipynb": check_paris_particle_gibbs,
  "sgd_noise.ipynb": check_sgd_noise,
  "sinkhorn_newton_sparse.ipynb": check_sinkhorn_newton_sparse,
  "tmac.ipynb": check_tmac,
  "topk_moe.ipynb": check_topk_moe,
  "zeroquant.ipynb": check_zeroquant,
}


# The notebooks run in three files (this one, test_notebooks_b.py, test_notebooks_c.py): `make test` hands whole
# files to its two workers (--dist=loadfile), and one file of 24 notebooks kept a worker busy for half the run.
NUM_SHARDS = 3


def shard(index: int) -> list[str]:
  return NOTEBOOKS[index::NUM_SHARDS]


def run_and_check(path: str) -> None:
  name = os.path.basename(path)
  assert name in CHECKS, f"{name} has no check in tests/test_notebooks.py"
  CHECKS[name](execute(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", shard(0), ids=os.path.basename)
def test_notebook_executes(path):
  run_and_check(path)
