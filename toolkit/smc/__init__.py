"""Sequential Monte Carlo: resampling, state-space models, PaRIS, PaRIS particle Gibbs, Feynman-Kac correctors."""
