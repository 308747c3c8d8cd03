// Validation of a layer/cell op's arguments and the step schedule of one direction.
//
// A layer runs over time-major input [T, B, I] or packed data [N, I] with batch_sizes [T]
// (int64, CPU, non-increasing, as in torch's PackedSequence). Step t touches rows
// [0, bs[t]) of the running state and data rows [off[t], off[t] + bs[t]). Weights follow
// torch.nn: w_ih [G*H, I], w_hh [G*H, P], b_* [G*H], w_hr [P, H] (P = proj_size or H).
// Every check names the op and the argument; sizes are int64.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fusedrnn/buffers.h"

namespace fusedrnn {

enum class Family { RnnTanh, RnnRelu, Lstm, Gru, LnLstm, LnGru };

template <Family F>
struct Traits;
template <>
struct Traits<Family::RnnTanh> {
  static constexpr Family kFamily = Family::RnnTanh;
  static constexpr int64_t kGates = 1, kWs = 0;
  static constexpr bool kHasCell = false, kSplitHidden = false, kLayerNorm = false;
  static constexpr const char* kName = "rnn_tanh";
};
template <>
struct Traits<Family::RnnRelu> {
  static constexpr Family kFamily = Family::RnnRelu;
  static constexpr int64_t kGates = 1, kWs = 0;
  static constexpr bool kHasCell = false, kSplitHidden = false, kLayerNorm = false;
  static constexpr const char* kName = "rnn_relu";
};
template <>
struct Traits<Family::Lstm> {
  static constexpr Family kFamily = Family::Lstm;
  static constexpr int64_t kGates = 4, kWs = 5;
  static constexpr bool kHasCell = true, kSplitHidden = false, kLayerNorm = false;
  static constexpr const char* kName = "lstm";
};
template <>
struct Traits<Family::Gru> {
  static constexpr Family kFamily = Family::Gru;
  // GRU's reset gate multiplies (W_hn h + b_hn), so hidden-side gate gradients differ
  // from the input side: they get their own matrix.
  static constexpr int64_t kGates = 3, kWs = 4;
  static constexpr bool kHasCell = false, kSplitHidden = true, kLayerNorm = false;
  static constexpr const char* kName = "gru";
};
// LayerNorm LSTM / GRU (ln_driver.h): their own driver and workspace layout (ln_step_args.h;
// kWs is unused). Both sides' gate gradients are separate matrices: no split hidden side.
template <>
struct Traits<Family::LnLstm> {
  static constexpr Family kFamily = Family::LnLstm;
  static constexpr int64_t kGates = 4, kWs = 0;
  static constexpr bool kHasCell = true, kSplitHidden = false, kLayerNorm = true;
  static constexpr const char* kName = "ln_lstm";
};
template <>
struct Traits<Family::LnGru> {
  static constexpr Family kFamily = Family::LnGru;
  static constexpr int64_t kGates = 3, kWs = 0;
  static constexpr bool kHasCell = false, kSplitHidden = false, kLayerNorm = true;
  static constexpr const char* kName = "ln_gru";
};

// LayerNorm weights per layer and direction, after w_ih, w_hh (and the biases): ln_ih [GH],
// ln_hh [GH], and for the LSTM ln_c [H] and (with biases) ln_c_b [H].
template <class Tr>
constexpr int64_t ln_weight_count(bool bias) {
  if constexpr (!Tr::kLayerNorm) {
    return 0;
  } else {
    return Tr::kHasCell ? (bias ? 4 : 3) : 2;
  }
}

inline std::optional<at::Tensor> opt(const std::optional<at::Tensor>& t) {
  if (t.has_value() && t->defined()) return t;
  return std::nullopt;
}

// An op's name in messages, "fusedrnn::<name>", held inline: a std::string of that length is a
// heap allocation, one of several that made a B = 1 cell step's plan cost more than its maths.
struct OpName {
  char text[64] = {};
  void set(const char* name) {  // (snprintf's format parsing cost ~80 ns of a ~3 us op)
    constexpr char kPrefix[] = "fusedrnn::";
    std::memcpy(text, kPrefix, sizeof kPrefix - 1);
    const size_t n = std::min(std::strlen(name), sizeof text - sizeof kPrefix);
    std::memcpy(text + sizeof kPrefix - 1, name, n);
    text[sizeof kPrefix - 1 + n] = '\0';
  }
  const char* c_str() const { return text; }
  operator std::string_view() const { return text; }
};
inline std::ostream& operator<<(std::ostream& os, const OpName& n) { return os << n.text; }

struct LayerPlan {
  OpName op;
  int64_t T = 0, B = 0, N = 0, I = 0, H = 0, P = 0, G = 1;
  bool packed = false, reverse = false, proj = false;
  // false: nobody will run backward (inference), so the forward neither allocates nor writes
  // the workspace (it is returned with 0 rows): no memory, page faults or traffic for it.
  bool keep_workspace = true;
  // false (cell backward without hx_grad): w_hh is only read for its shape, never its values.
  bool w_hh_used = true;
  // Per step (inline for up to 4 steps: no heap for a cell or a T = 1 call).
  c10::SmallVector<int64_t, 4> bs, off;
  at::Tensor x;                             // [N, I] contiguous
  at::Tensor h0, c0;                        // [B, P], [B, H] contiguous, or undefined
  at::Tensor w_ih, w_hh, b_ih, b_hh, w_hr;  // contiguous (unless unused) or undefined
  std::vector<at::Tensor> ln;               // LayerNorm families: see ln_weight_count
  c10::SmallVector<int64_t, 5> in_shape;    // shape of input as given (for grad_input)

  std::vector<int64_t> out_shape(int64_t width) const {
    if (packed) return {N, width};
    return {T, B, width};
  }
};

namespace detail {

inline std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

inline void check_like(std::string_view op, const char* name, const at::Tensor& t,
                       const at::Tensor& ref) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined (None); expected a ", ref.scalar_type(),
              " tensor");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": expected ", name, " to have dtype ",
              ref.scalar_type(), " like input, got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": expected ", name, " on device ", ref.device(),
              " like input, got ", t.device());
}

inline void check_shape(std::string_view op, const char* name, const at::Tensor& t,
                        at::IntArrayRef want, const char* letters) {
  TORCH_CHECK(t.sizes() == want, op, ": expected ", name, " of shape ", letters, " = ",
              shape_str(want), ", got ", shape_str(t.sizes()));
}

}  // namespace detail

namespace detail {

using OptTensor = std::optional<at::Tensor>;

// The weights define I, H and P (and whether the layer is projected).
template <class Tr>
void plan_weights(LayerPlan& p, const at::Tensor& input, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                  const OptTensor& w_hr) {
  const OpName& op = p.op;
  check_like(op, "w_ih", w_ih, input);
  check_like(op, "w_hh", w_hh, input);
  TORCH_CHECK(w_ih.dim() == 2, op, ": expected w_ih to be 2-D [G*H, I], got ", w_ih.dim(), "-D");
  TORCH_CHECK(w_hh.dim() == 2, op, ": expected w_hh to be 2-D [G*H, P], got ", w_hh.dim(), "-D");
  TORCH_CHECK(w_ih.size(0) % p.G == 0 && w_ih.size(0) > 0, op, ": w_ih has ", w_ih.size(0),
              " rows, expected a positive multiple of ", p.G, " (gates) for ", Tr::kName);
  p.H = w_ih.size(0) / p.G;
  p.I = w_ih.size(1);
  p.P = p.H;
  if (p.proj) {
    TORCH_CHECK(Tr::kFamily == Family::Lstm, op, ": w_hr (projection) is only for LSTM");
    check_like(op, "w_hr", *w_hr, input);
    TORCH_CHECK(w_hr->dim() == 2, op, ": expected w_hr to be 2-D [P, H], got ", w_hr->dim(), "-D");
    p.P = w_hr->size(0);
    TORCH_CHECK(p.P > 0 && p.P < p.H, op, ": proj_size P = ", p.P,
                " must satisfy 0 < P < H = ", p.H);
    check_shape(op, "w_hr", *w_hr, {p.P, p.H}, "[P, H]");
  }
  check_shape(op, "w_hh", w_hh, {p.G * p.H, p.P}, "[G*H, P]");
  for (const auto& [name, b] : {std::pair{"b_ih", &b_ih}, std::pair{"b_hh", &b_hh}}) {
    if (!*b) continue;
    check_like(op, name, **b, input);
    check_shape(op, name, **b, {p.G * p.H}, "[G*H]");
  }
}

// batch_sizes of packed input: validated (positive, non-increasing, summing to N) into p.bs.
inline void plan_packed(LayerPlan& p, const at::Tensor& input, const at::Tensor& bsz) {
  const OpName& op = p.op;
  TORCH_CHECK(bsz.dim() == 1 && bsz.scalar_type() == at::kLong && bsz.device().is_cpu(), op,
              ": expected batch_sizes to be a 1-D int64 CPU tensor, got ", bsz.dim(), "-D ",
              bsz.scalar_type(), " on ", bsz.device());
  TORCH_CHECK(input.dim() == 2, op,
              ": with batch_sizes, expected input to be packed data 2-D [N, I], got ", input.dim(),
              "-D");
  p.T = bsz.size(0);
  const auto acc = bsz.contiguous();
  const int64_t* b = acc.data_ptr<int64_t>();
  p.bs.assign(b, b + p.T);
  int64_t sum = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    TORCH_CHECK(p.bs[t] > 0, op, ": batch_sizes must be positive, got ", p.bs[t], " at step ", t);
    TORCH_CHECK(t == 0 || p.bs[t] <= p.bs[t - 1], op,
                ": batch_sizes must be non-increasing (sorted sequences), got ", p.bs[t - 1],
                " then ", p.bs[t], " at step ", t);
    sum += p.bs[t];
  }
  TORCH_CHECK(sum == input.size(0), op, ": batch_sizes sum to ", sum, " but the packed input has ",
              input.size(0), " rows");
  p.N = sum;
}

// The step schedule: T, B, N, and per step its rows (bs) and data offset (off).
inline void plan_sequence(LayerPlan& p, const at::Tensor& input, const OptTensor& batch_sizes,
                          const OptTensor& h0, bool is_cell) {
  const OpName& op = p.op;
  if (is_cell) {
    TORCH_CHECK(input.dim() == 2, op, ": expected input to be 2-D [B, I], got ", input.dim(),
                "-D of shape ", shape_str(input.sizes()));
    p.T = 1;
    p.B = input.size(0);
    p.N = p.B;
    p.bs.assign(1, p.B);
  } else if (p.packed) {
    plan_packed(p, input, *batch_sizes);
    p.B = p.T > 0 ? p.bs[0] : (h0 ? h0->size(0) : 0);
  } else {
    TORCH_CHECK(input.dim() == 3, op, ": expected input to be 3-D [T, B, I], got ", input.dim(),
                "-D of shape ", shape_str(input.sizes()));
    p.T = input.size(0);
    p.B = input.size(1);
    p.N = p.T * p.B;
    p.bs.assign(p.T, p.B);
  }
  TORCH_CHECK(input.size(-1) == p.I, op, ": input has feature size ", input.size(-1),
              " but w_ih expects I = ", p.I);
  p.off.resize(p.T);
  for (int64_t t = 0, o = 0; t < p.T; ++t) {
    p.off[t] = o;
    o += p.bs[t];
  }
}

// The initial states (named hx / cx for the cell ops).
template <class Tr>
void plan_states(LayerPlan& p, const at::Tensor& input, const OptTensor& h0, const OptTensor& c0,
                 bool is_cell) {
  const OpName& op = p.op;
  // A cell's states are required (torch.ops passes a None as an undefined tensor).
  TORCH_CHECK(!is_cell || h0, op, ": hx is undefined (None); expected a tensor [B, H]");
  TORCH_CHECK(!is_cell || !Tr::kHasCell || c0, op,
              ": cx is undefined (None); expected a tensor [B, H]");
  if (h0) {
    check_like(op, is_cell ? "hx" : "h0", *h0, input);
    check_shape(op, is_cell ? "hx" : "h0", *h0, {p.B, p.P}, "[B, P]");
    p.h0 = h0->contiguous();
  }
  TORCH_CHECK(Tr::kHasCell || !c0, op, ": c0 is only for LSTM");
  if (c0) {
    check_like(op, is_cell ? "cx" : "c0", *c0, input);
    check_shape(op, is_cell ? "cx" : "c0", *c0, {p.B, p.H}, "[B, H]");
    p.c0 = c0->contiguous();
  }
}

}  // namespace detail

// Builds and validates the plan. `is_cell`: input [B, I] and hx required (the cell ops).
// `need_w_ih` / `need_w_hh` false: that weight's values are never read (a backward op that
// skips dx or dh), so it may be a stand-in of the right shape (e.g. an expanded scalar).
// `need_biases` false (every backward op: bias gradients are column sums of dG): likewise for
// the biases, which are then not copied to contiguous memory (a stand-in's copy would be a
// fresh [G*H] buffer per layer and step).
template <class Tr>
LayerPlan make_plan(const char* opname, const at::Tensor& input,
                    const std::optional<at::Tensor>& batch_sizes_in,
                    const std::optional<at::Tensor>& h0_in, const std::optional<at::Tensor>& c0_in,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& b_ih_in,
                    const std::optional<at::Tensor>& b_hh_in,
                    const std::optional<at::Tensor>& w_hr_in, bool reverse, bool is_cell = false,
                    bool need_w_ih = true, bool need_w_hh = true, bool need_biases = true) {
  LayerPlan p;
  p.op.set(opname);
  p.G = Tr::kGates;
  p.reverse = reverse;
  const auto batch_sizes = opt(batch_sizes_in);
  const auto h0 = opt(h0_in), c0 = opt(c0_in), b_ih = opt(b_ih_in), b_hh = opt(b_hh_in),
             w_hr = opt(w_hr_in);
  p.packed = batch_sizes.has_value();
  p.proj = w_hr.has_value();
  TORCH_CHECK(input.defined(), p.op, ": input is undefined");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), p.op,
              ": expected input to be a floating-point tensor, got ", input.scalar_type());
  p.in_shape.assign(input.sizes().begin(), input.sizes().end());
  detail::plan_weights<Tr>(p, input, w_ih, w_hh, b_ih, b_hh, w_hr);
  detail::plan_sequence(p, input, batch_sizes, h0, is_cell);
  detail::plan_states<Tr>(p, input, h0, c0, is_cell);

  p.x = buffer_contiguous(input);
  // A cell's [B, I] is already the shape: a view would cost an autograd view record (~0.3 us).
  if (p.x.dim() != 2 || p.x.size(0) != p.N) p.x = p.x.view({p.N, p.I});
  p.w_ih = need_w_ih ? w_ih.contiguous() : w_ih;
  p.w_hh = need_w_hh ? w_hh.contiguous() : w_hh;
  p.w_hh_used = need_w_hh;
  if (b_ih) p.b_ih = need_biases ? b_ih->contiguous() : *b_ih;
  if (b_hh) p.b_hh = need_biases ? b_hh->contiguous() : *b_hh;
  if (w_hr) p.w_hr = w_hr->contiguous();
  return p;
}

// Validates an incoming gradient (may be undefined = zero) and makes it contiguous.
inline at::Tensor grad_arg(const LayerPlan& p, const char* name, const std::optional<at::Tensor>& g,
                           at::IntArrayRef shape) {
  if (!g.has_value() || !g->defined()) return at::Tensor();
  detail::check_like(p.op, name, *g, p.x);
  TORCH_CHECK(g->numel() == c10::multiply_integers(shape), p.op, ": expected ", name,
              " with shape ", detail::shape_str(shape), ", got ", detail::shape_str(g->sizes()));
  return buffer_contiguous(*g).view(shape);
}

inline at::Tensor saved_arg(const LayerPlan& p, const char* name, const at::Tensor& t,
                            at::IntArrayRef shape) {
  detail::check_like(p.op, name, t, p.x);
  TORCH_CHECK(t.numel() == c10::multiply_integers(shape), p.op, ": expected saved ", name, " with ",
              c10::multiply_integers(shape), " elements ", detail::shape_str(shape), ", got ",
              detail::shape_str(t.sizes()));
  return buffer_contiguous(t).view(shape);
}

}  // namespace fusedrnn
