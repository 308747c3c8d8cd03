// Products with a thin side (few columns) on the CPU, run by the kernel table's own passes
// instead of MKL, which is far below memory bandwidth at these shapes (cpu/thin_products.h has
// the shapes and timings). buffer_mm and column_sums try them first.
#pragma once

#include <ATen/ATen.h>

namespace fusedrnn {

// Writes a @ b into out (contiguous [a.size(0), b.size(1)]) and returns true when this is a thin
// product it runs: CPU float or double, tuning().thin, and either a with unit-stride rows and
// b with at most 8 columns (RowDot), or a = X^T for X with unit-stride rows and b with at most
// 4 columns (TallDot), or, wide, with unit-stride rows, more than 768 of them, and 16 to 64
// columns in whole 64-byte vectors (dW_hh at small H), or an outer product (a [M, 1], b [1, J]
// with unit-stride b and more than 8 columns: the weight gradients of a one-row step; the
// products MKL's K = 1 GEMM gives). Otherwise returns false and leaves out alone.
bool thin_mm(const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

// The column sums of m [N, n] (float or double on the CPU, unit-stride rows, tuning().thin; the
// bits do not depend on the thread count); an undefined tensor where it does not apply.
at::Tensor thin_column_sums(const at::Tensor& m);

// The column sums of a * b (a [N, n] and b [N, n] of dtype T on the CPU, unit-stride rows: a
// LayerNorm weight's gradient, dy * xhat), by the same pass whatever tuning().thin says (it
// replaced a pass of its own; the bits do not depend on the thread count).
template <class T>
at::Tensor column_product_sums(const at::Tensor& a, const at::Tensor& b);

}  // namespace fusedrnn
