// When a product with a thin side runs on the kernel table's passes (fusedrnn/thin_products.h),
// and their arguments from the tensors' strides. Tests reach them through
// torch.ops.fusedrnn_testing (below): what buffer_mm and the bias gradients' column sums compute.
#include "fusedrnn/thin_products.h"

#include <torch/library.h>

#include "cpu/kernel_table.h"
#include "cpu/tuning.h"
#include "fusedrnn/buffers.h"
#include "fusedrnn/dtype_dispatch.h"
#include "fusedrnn/layer_driver.h"

namespace fusedrnn {
namespace {

constexpr int64_t kMaxTallJ = 4, kMaxRowJ = 8, kMaxWideJ = 64, kMinWideK = 3 * 256 + 1;

bool eligible(const at::Tensor& t) {
  return t.is_cpu() && t.dim() == 2 && t.layout() == at::kStrided && !t.is_conj() && !t.is_neg() &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

template <class T>
void row_dot(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const at::Tensor rt = b.t().contiguous();  // [J, M]: a few hundred values
  cpu::RowDot<T> s;
  s.K = a.size(0);
  s.M = a.size(1);
  s.J = b.size(1);
  s.x = a.data_ptr<T>();
  s.ldx = a.stride(0);
  s.rt = rt.data_ptr<T>();
  s.out = out.data_ptr<T>();
  s.ldo = out.stride(0);
  cpu::kernels_for<T>().row_dot(s);
}

// a [M, 1] (any stride) times b [1, J] (unit stride): out's rows are b scaled by a's values.
template <class T>
void outer(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  cpu::outer(a.size(0), b.size(1), a.data_ptr<T>(), a.stride(0), b.data_ptr<T>(), out.data_ptr<T>(),
             out.stride(0));
}

// a = X^T: X [K, M] has rows a's columns (stride a.stride(1)), unit-stride along a's rows;
// y (rows ldy, J = 1, b null): the column sums of X * Y.
template <class T>
void tall_dot(const at::Tensor& a, const T* b, int64_t b_rs, int64_t b_cs, int64_t J, T* out,
              int64_t out_m, int64_t out_j, const T* y = nullptr, int64_t ldy = 0) {
  cpu::TallDot<T> s;
  s.K = a.size(1);
  s.M = a.size(0);
  s.J = J;
  s.x = a.data_ptr<T>();
  s.ldx = a.stride(1);
  s.y = y;
  s.ldy = ldy;
  s.b = b;
  s.b_rs = b_rs;
  s.b_cs = b_cs;
  s.out = out;
  s.out_m = out_m;
  s.out_j = out_j;
  cpu::kernels_for<T>().tall_dot(s);
}

}  // namespace

bool thin_mm(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  if (!cpu::tuning().thin || !eligible(a) || !eligible(b) || !eligible(out) ||
      a.scalar_type() != b.scalar_type() || out.scalar_type() != a.scalar_type() ||
      !out.is_contiguous() || a.size(1) != b.size(0) || out.size(0) != a.size(0) ||
      out.size(1) != b.size(1))
    return false;  // (at::mm_out then runs, and raises for mismatched arguments)
  const int64_t J = b.size(1);
  if (a.size(1) == 1 && J > kMaxRowJ && (b.stride(1) == 1 || J <= 1)) {  // a [M, 1] b [1, J]
    dispatch_dtype<float, double>(a.scalar_type(), "thin_mm", "float or double",
                                  [&](auto t) { outer<decltype(t)>(a, b, out); });
    return true;
  }
  const bool rows = a.stride(1) == 1 || a.size(1) <= 1;
  const bool cols = a.stride(0) == 1 || a.size(0) <= 1;
  if (J >= 1 && J <= kMaxRowJ && rows) {
    dispatch_dtype<float, double>(a.scalar_type(), "thin_mm", "float or double",
                                  [&](auto t) { row_dot<decltype(t)>(a, b, out); });
    return true;
  }
  // Wide (TallDot's vectorised-along-J pass): J a multiple of 64 bytes of T, whole vectors on
  // every kernel table; K >= kMinWideK: four blocks of rows or more (three, at K = 600, left
  // one of two threads idle a third of the time: 0.85x MKL).
  const bool wide = J > kMaxTallJ && J <= kMaxWideJ && J % (64 / a.element_size()) == 0 &&
                    b.stride(1) == 1 && a.size(1) >= kMinWideK;
  if (J >= 1 && (J <= kMaxTallJ || wide) && cols) {
    dispatch_dtype<float, double>(a.scalar_type(), "thin_mm", "float or double", [&](auto t) {
      using T = decltype(t);
      tall_dot<T>(a, b.data_ptr<T>(), b.stride(0), b.stride(1), J, out.data_ptr<T>(), out.stride(0),
                  out.stride(1));
    });
    return true;
  }
  return false;
}

at::Tensor thin_column_sums(const at::Tensor& m) {
  if (!cpu::tuning().thin || !eligible(m) || !(m.stride(1) == 1 || m.size(1) <= 1))
    return at::Tensor();
  at::Tensor out = at::empty({m.size(1)}, m.options());
  dispatch_dtype<float, double>(m.scalar_type(), "column_sums", "float or double", [&](auto t) {
    using T = decltype(t);
    tall_dot<T>(m.t(), nullptr, 0, 0, 1, out.data_ptr<T>(), 1, 0);
  });
  return out;
}

template <class T>
at::Tensor column_product_sums(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(1)}, a.options());
  tall_dot<T>(a.t(), nullptr, 0, 0, 1, out.data_ptr<T>(), 1, 0, b.data_ptr<T>(), b.stride(0));
  return out;
}
template at::Tensor column_product_sums<float>(const at::Tensor&, const at::Tensor&);
template at::Tensor column_product_sums<double>(const at::Tensor&, const at::Tensor&);

}  // namespace fusedrnn

TORCH_LIBRARY(fusedrnn_testing, m) {
  m.def("buffer_mm(Tensor a, Tensor b) -> Tensor");
  m.def("column_sums(Tensor m) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedrnn_testing, CPU, m) {
  m.impl("buffer_mm", &fusedrnn::buffer_mm);
  m.impl("column_sums", &fusedrnn::column_sums);
}
