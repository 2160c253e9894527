"""A Gaussian mixture over per-atom features, and the map from its score to eV/Å.

The latent uncertainty of one model (:mod:`equiforce.uncertainty.latent`) asks
how far each atom's final invariant features lie from those of the training
atoms. :class:`FeatureDensity` is a full-covariance Gaussian mixture fitted to
the training features by expectation-maximisation (:func:`fit_mixture`, after
Zhu et al., J. Chem. Phys. 158, 164111 (2023), who score atoms by the negative
log-likelihood of such a mixture over NequIP's features). Its score is a
dimensionless distance

    u_i = 2 (NLL_i − NLL_0) / K,    NLL_0 = median_train(NLL) − K/2,

where the mixture lives on K principal axes of the D features (K ≤ D), so that
for a Gaussian cloud u is the squared Mahalanobis distance over those K axes
divided by K: about 1 on the training atoms, growing quadratically with the
distance from them. :class:`ErrorScale` turns u into a predicted force error
σ_i = a·u_i^p (eV/Å), monotone, fitted on validation atoms so that the RMS of σ
equals the RMS force error there (the sense in which an ensemble's std is
calibrated, :mod:`equiforce.train.calibration`).

Written by hand in torch: scikit-learn is no dependency of equiforce, and the
few tensors of a mixture load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: added to the diagonal of every covariance of the standardised features
REG_COVAR = 1e-3
#: smallest distance u fed to the power law (u ≤ 0 only by numerical noise)
MIN_DISTANCE = 1e-6


class FeatureDensity(nn.Module):
    """A Gaussian mixture over standardised features, scored as a distance u.

    Buffers (C components, D features, K ≤ D mixture dimensions):
    ``shift``/``scale`` (D,) standardise the features; ``projection`` (D, K)
    maps them onto their K leading principal axes (the identity for K = D);
    ``prec_chol`` (C, K, K) with Σ_c⁻¹ = U_c U_cᵀ; ``mean_proj`` (C, K) = μ_c
    U_c; ``log_norm`` (C,) = log π_c + Σ log diag U_c − K/2 log 2π; ``nll0`` ()
    the offset of u. A call costs D·C·K multiply-adds per atom (full width:
    D = K = 128, C = 8: 131k, a third of a compiled small-molecule So3krates
    call; K = 32: a quarter of that).
    """

    def __init__(
        self, n_components: int, n_features: int, n_dims: int | None = None
    ) -> None:
        super().__init__()
        c, d = int(n_components), int(n_features)
        k = d if n_dims is None else int(n_dims)
        if not 1 <= k <= d:
            raise ValueError(f"n_dims must be within 1..{d} (the features), got {k}")
        self.n_components, self.n_features, self.n_dims = c, d, k
        f64 = torch.float64
        self.register_buffer("shift", torch.zeros(d, dtype=f64))
        self.register_buffer("scale", torch.ones(d, dtype=f64))
        self.register_buffer("projection", torch.eye(d, k, dtype=f64))
        self.register_buffer("prec_chol", torch.eye(k, dtype=f64).repeat(c, 1, 1))
        self.register_buffer("mean_proj", torch.zeros(c, k, dtype=f64))
        self.register_buffer("log_norm", torch.zeros(c, dtype=f64))
        self.register_buffer("nll0", torch.zeros((), dtype=f64))

    def nll(self, features: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood (n_atoms,) of features (n_atoms, D), nats."""
        return -self._log_likelihood(features)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """The distance u (n_atoms,) from the training features (≈ 1 on them)."""
        offset = self._affine(features.dtype, features.device)[3]  # −2 NLL_0 / D
        log_like = self._log_likelihood(features)
        return torch.add(offset, log_like, alpha=-2.0 / self.n_dims)

    def prepare(self, dtype: torch.dtype, device: torch.device) -> None:
        """Build the cached affine map now, for features of ``dtype``.

        A compiled function traced with the map cached holds it as a constant;
        traced without it, the function would rebuild the map from the buffers
        at every call (C·D·K² float64 multiply-adds).
        """
        self._affine(dtype, device)

    def _log_likelihood(self, features: torch.Tensor) -> torch.Tensor:
        """The log-likelihood (n_atoms,) in few, large kernels (it runs at every call)."""
        weight, bias, log_norm, _ = self._affine(features.dtype, features.device)
        y = torch.addmm(bias, features, weight, beta=-1.0)  # (n, C·K)
        sq = y.view(-1, self.n_components, self.n_dims).square().sum(-1)
        return torch.logsumexp(torch.sub(log_norm, sq, alpha=0.5), dim=-1)  # (n,)

    def _affine(self, dtype: torch.dtype, device: torch.device):
        """W (D, C·K), b (C·K,) with y_c = x W_c − b_c the whitened offsets, cached.

        Standardisation and projection folded in: y_c = ((x − shift)/scale P
        − μ_c) U_c. Cached per dtype and device until a buffer changes in place
        (its version counter) or is replaced (its storage). While a compiler
        traces the call the cache that :meth:`prepare` filled is read as it is
        (storage addresses cannot be compared inside a trace) and never written
        (a traced value must not outlive the trace).
        """
        cache = self.__dict__.get("_affine_cache")
        if _tracing():
            if cache is not None and cache[0][:2] == (dtype, device):
                return cache[1]
            return self._affine_maps(dtype, device)
        key = (dtype, device, *_state(self.buffers()))
        if cache is None or cache[0] != key:
            cache = (key, self._affine_maps(dtype, device))
            self.__dict__["_affine_cache"] = cache
        return cache[1]

    def _affine_maps(self, dtype: torch.dtype, device: torch.device) -> tuple:
        """The tensors :meth:`_affine` caches, built from the buffers."""
        c, d, k = self.n_components, self.n_features, self.n_dims
        proj = self.projection / self.scale[:, None]  # (D, K)
        u = torch.einsum("dk,ckl->cdl", proj, self.prec_chol)  # (C, D, K)
        weight = u.permute(1, 0, 2).reshape(d, c * k)
        bias = (self.shift @ weight).view(c, k) + self.mean_proj
        offset = -2.0 * self.nll0 / k
        tensors = (weight, bias.reshape(c * k), self.log_norm, offset)
        return tuple(t.to(device=device, dtype=dtype) for t in tensors)


class ErrorScale(nn.Module):
    """σ = a·max(u, ε)^p: a predicted force error (eV/Å) from a distance u.

    Buffers ``prefactor`` a (eV/Å) and ``exponent`` p > 0 (monotone increasing).
    """

    def __init__(self, prefactor: float = 1.0, exponent: float = 0.5) -> None:
        super().__init__()
        f64 = torch.float64
        self.register_buffer("prefactor", torch.tensor(float(prefactor), dtype=f64))
        self.register_buffer("exponent", torch.tensor(float(exponent), dtype=f64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Predicted per-atom force error (n_atoms,) eV/Å, in the dtype of u."""
        a, p = self._floats()
        return u.clamp(min=MIN_DISTANCE).pow_(p).mul_(a)

    def _floats(self) -> tuple[float, float]:
        """(a, p) as Python floats, cached: no ``.item()`` sync at every call.

        While a compiler traces the call the cached pair is read as it is (see
        :meth:`FeatureDensity._affine`); :meth:`prepare` fills it beforehand.
        """
        cache = self.__dict__.get("_floats_cache")
        if _tracing() and cache is not None:
            return cache[1:]
        key = tuple(_state((self.prefactor, self.exponent)))
        if cache is None or cache[0] != key:
            cache = (key, float(self.prefactor), float(self.exponent))
            self.__dict__["_floats_cache"] = cache
        return cache[1:]

    def prepare(self) -> None:
        """Read the buffers into the cache now (before a compiler traces a call)."""
        self._floats()


def fit_error_scale(
    u: torch.Tensor, err: torch.Tensor, bounds: tuple[float, float] = (0.25, 1.5)
) -> ErrorScale:
    """:class:`ErrorScale` of validation atoms' distances u and force errors |ΔF|.

    The exponent p is the least-squares slope of log|ΔF| on log u, clipped to
    ``bounds`` (validation atoms lie close to the data, where the slope is
    poorly determined; p ≥ 0.25 keeps the map strictly increasing); the
    prefactor makes RMS σ equal RMS |ΔF| over the atoms.
    """
    ok = torch.isfinite(u) & torch.isfinite(err)
    x = u[ok].double().clamp(min=MIN_DISTANCE).log()
    y = err[ok].double().clamp(min=1e-6).log()
    if x.numel() < 2 or float(x.var()) == 0.0:
        p = bounds[0]
    else:
        p = float(
            ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
        )
    p = min(max(p, bounds[0]), bounds[1])
    base = (p * x).exp()  # u^p
    a = float(err[ok].double().square().mean().sqrt() / base.square().mean().sqrt())
    return ErrorScale(a, p)


def fit_mixture(
    features: torch.Tensor,
    n_components: int = 8,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    n_dims: int | None = None,
) -> FeatureDensity:
    """Fit a full-covariance Gaussian mixture to training features by EM.

    Args:
        features: (n_atoms, D) training features (any float dtype; fitted in
            float64).
        n_components: C, at most the number of atoms.
        max_iter: EM iterations at most.
        tol: stop when the mean log-likelihood per atom changes less (nats).
        seed: k-means++ initialisation.
        n_dims: K, fit the mixture on the standardised features' K leading
            principal components (None: all D); cheaper to evaluate (D·C·K per
            atom instead of D·C·D).

    Returns:
        the mixture, with ``nll0`` set from the training atoms' median NLL.
    """
    x = features.detach().to(torch.float64)
    n, d = x.shape
    c = min(int(n_components), n)
    shift, scale = x.mean(0), x.std(0).clamp(min=1e-8)
    x = (x - shift) / scale
    density = FeatureDensity(c, d, n_dims)
    density.shift.copy_(shift)
    density.scale.copy_(scale)
    if density.n_dims < d:  # principal axes of the standardised features
        _, vectors = torch.linalg.eigh(x.T @ x / n)  # ascending eigenvalues
        density.projection.copy_(vectors[:, -density.n_dims :].flip(1))
        x = x @ density.projection  # (n, K)
        d = density.n_dims
    resp = _kmeans_resp(x, c, seed)  # (n, C)
    previous = -math.inf
    for _ in range(max_iter):
        _m_step(density, x, resp)
        log_p = _log_joint(density, x)  # (n, C)
        log_like = torch.logsumexp(log_p, -1)
        resp = (log_p - log_like[:, None]).exp()
        current = float(log_like.mean())
        if abs(current - previous) < tol:
            break
        previous = current
    density.nll0.fill_(float((-log_like).median()) - d / 2)
    return density


def _log_joint(density: FeatureDensity, x: torch.Tensor) -> torch.Tensor:
    """The joint log π_c + log N(x | μ_c, Σ_c) (n, C) of standardised features x."""
    y = torch.einsum("nd,cde->nce", x, density.prec_chol) - density.mean_proj
    return density.log_norm - 0.5 * y.square().sum(-1)


def _m_step(density: FeatureDensity, x: torch.Tensor, resp: torch.Tensor) -> None:
    """Weights, means and Cholesky factors of the precisions from responsibilities."""
    n, d = x.shape
    counts = resp.sum(0) + 1e-10  # (C,)
    means = resp.T @ x / counts[:, None]  # (C, D)
    eye = torch.eye(d, dtype=x.dtype)
    covs = []
    for k in range(density.n_components):
        diff = x - means[k]
        covs.append((resp[:, k, None] * diff).T @ diff / counts[k] + REG_COVAR * eye)
    chol = torch.linalg.cholesky(torch.stack(covs))  # (C, D, D) lower, Σ = L Lᵀ
    # U = L⁻ᵀ: Σ⁻¹ = L⁻ᵀ L⁻¹ = U Uᵀ, and (x − μ)ᵀ Σ⁻¹ (x − μ) = |(x − μ) U|²
    inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    prec_chol = inv.transpose(1, 2)
    log_det = torch.diagonal(prec_chol, dim1=1, dim2=2).log().sum(-1)  # log|U|
    density.prec_chol.copy_(prec_chol)
    density.mean_proj.copy_(torch.einsum("cd,cde->ce", means, prec_chol))
    log_w = (counts / n).log()
    density.log_norm.copy_(log_w + log_det - 0.5 * d * math.log(2 * math.pi))


def _kmeans_resp(x: torch.Tensor, c: int, seed: int, iters: int = 20) -> torch.Tensor:
    """Hard responsibilities (n, C) of k-means with k-means++ seeds."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    centres = [x[torch.randint(n, (1,), generator=gen)].squeeze(0)]
    for _ in range(1, c):
        d2 = torch.cdist(x, torch.stack(centres)).square().min(1).values
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / n)
        centres.append(x[torch.multinomial(probs, 1, generator=gen)].squeeze(0))
    centres = torch.stack(centres)
    for _ in range(iters):
        label = torch.cdist(x, centres).argmin(1)
        for k in range(c):
            members = x[label == k]
            if len(members):
                centres[k] = members.mean(0)
    label = torch.cdist(x, centres).argmin(1)
    return torch.nn.functional.one_hot(label, c).to(x.dtype)


def _tracing() -> bool:
    """Whether Dynamo or ``make_fx`` (AOTInductor's export) is tracing this call."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return torch.compiler.is_compiling() or get_proxy_mode() is not None


def _state(tensors) -> list[tuple[int, int]]:
    """(storage address, version) per tensor: changes when one is edited or replaced."""
    return [(t.data_ptr(), t._version) for t in tensors]
