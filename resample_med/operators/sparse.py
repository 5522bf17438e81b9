"""A sparse matrix stored with its exact transpose, applied through a differentiable torch Function.

Both ``M`` and ``M^T`` are torch sparse CSR tensors with int32 indices, so each product is one
``torch.sparse.mm`` (row-parallel on CPU, cuSPARSE on CUDA) and the backward of ``x -> M x`` is
``g -> M^T g`` with the very same stored numbers: the pair is exactly adjoint up to floating-point
summation order. Because the backward is itself an application of the (transposed) pair, the
adjoint is differentiable too (double backward works).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch


def make_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torch sparse CSR tensor from its components, without torch's 'CSR support is in beta' warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def csr_from_scipy(matrix: scipy.sparse.csr_matrix, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scipy CSR -> torch sparse CSR (int32 indices, ``dtype`` values) on the CPU, sharing memory when possible."""
    return make_csr(
        torch.from_numpy(np.ascontiguousarray(matrix.indptr, dtype=np.int32)),
        torch.from_numpy(np.ascontiguousarray(matrix.indices, dtype=np.int32)),
        torch.from_numpy(np.ascontiguousarray(matrix.data)).to(dtype),
        tuple(matrix.shape),
    )


def csr_to_scipy(matrix: torch.Tensor) -> scipy.sparse.csr_matrix:
    """torch sparse CSR (CPU) -> scipy CSR sharing memory."""
    return scipy.sparse.csr_matrix(
        (matrix.values().numpy(), matrix.col_indices().numpy(), matrix.crow_indices().numpy()),
        shape=tuple(matrix.shape),
    )


@dataclass(frozen=True, eq=False)
class SparsePair:
    """``matrix`` ``(n_out, n_in)`` and ``matrix_t`` = its transpose ``(n_in, n_out)``, both CSR."""

    matrix: torch.Tensor
    matrix_t: torch.Tensor

    @classmethod
    def from_scipy(cls, matrix: scipy.sparse.csr_matrix, dtype: torch.dtype = torch.float32) -> SparsePair:
        """Store ``matrix`` and its transpose, both with sorted column indices.

        Two O(nnz) CSR->CSC passes (no comparison sort): the first gives ``M^T`` with sorted columns,
        the second ``M`` with sorted columns, which makes the products about twice as fast (memory
        locality) as the unsorted rows Joseph's x-major rays produce.
        """
        transposed = matrix.T.tocsr()
        return cls(csr_from_scipy(transposed.T.tocsr(), dtype), csr_from_scipy(transposed, dtype))

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_out, n_in)``."""
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    def transposed(self) -> SparsePair:
        """The pair for ``M^T`` (no copy)."""
        return SparsePair(self.matrix_t, self.matrix)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SparsePair:
        """Copy to ``device`` and/or cast values to ``dtype``."""
        return SparsePair(*(_csr_to(m, device, dtype) for m in (self.matrix, self.matrix_t)))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, n_in) -> x M^T (B, n_out)``, not tracked by autograd (see :func:`apply_sparse`)."""
        if x.shape[0] == 1:
            return torch.mv(self.matrix, x[0])[None]
        return torch.sparse.mm(self.matrix, x.t().contiguous()).t()


def _csr_to(matrix: torch.Tensor, device: torch.device | str | None, dtype: torch.dtype | None) -> torch.Tensor:
    values = matrix.values().to(device=device, dtype=dtype)
    return make_csr(
        matrix.crow_indices().to(device), matrix.col_indices().to(device), values, (matrix.shape[0], matrix.shape[1])
    )


class _ApplySparse(torch.autograd.Function):
    """``y = x M^T`` row-wise with backward ``g -> g M`` through the stored transpose."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, pair: SparsePair) -> torch.Tensor:
        ctx.pair = pair  # type: ignore[attr-defined]
        return pair.matmul(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _ApplySparse.apply(grad, ctx.pair.transposed()), None  # type: ignore[attr-defined]


def apply_sparse(pair: SparsePair, x: torch.Tensor) -> torch.Tensor:
    """Differentiable ``x (B, n_in) -> (B, n_out)``, each row multiplied by ``pair.matrix``."""
    if x.shape[-1] != pair.shape[1]:
        raise ValueError(f"input has {x.shape[-1]} entries per item, the operator expects {pair.shape[1]}")
    return _ApplySparse.apply(x, pair)
