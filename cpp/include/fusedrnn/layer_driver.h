// The time loop of one direction of one layer, shared by every backend.
//
// Forward (per layer): xg = x W_ih^T (+ b_ih for GRU), one GEMM over all N rows; then per step one
// recurrent GEMM hg = h W_hh^T into a preallocated [B, GH] buffer and one fused pointwise
// pass (Kern::forward). Projected LSTM: one extra GEMM per step out = h_raw W_hr^T.
// Narrow inputs (I <= kStepInputMaxI) instead project each step's rows into a [B, GH] buffer
// just before its pointwise pass (see input_per_step). Rows run in chunks (RowChunks). A
// backend may run the recurrent GEMM inside the pointwise pass instead (FusedStep), and then
// may take wider inputs per step as well (FusedStep::takes_wide_input).
// Saved for backward: output [N, P] and the workspace ws [N, kWs*H] (see cell_math.h).
// Backward: per step in reverse, one fused pointwise pass (Kern::backward) yields the gate
// gradients dG [N, GH] (GRU: [N, 4H], both sides in one buffer); the hidden gradient flows
// back with one GEMM dG W_hh. After the loop: dW_ih = dGi^T x, dW_hh = dGh^T h_prev (h_prev
// read in place unless packed), dx = dGi W_ih only if asked (input_grad), biases = column sums.
// Inside the loops there are only raw-pointer calls: no allocation, no dispatcher.
//
// Backend policy (the driver's `Be` parameter): a type naming every choice the driver leaves to
// a backend, so what runs is read where the backend is declared (cpu_backend.h, cuda_backend.h,
// emu_backend.h):
//   Be::Blas                      gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C,
//                                 ldc) in row-major terms, add_rows(rows, cols, a?, b, out)
//                                 (out = a + b, a may be null), copy_rows(rows, cols, src, dst),
//                                 on the tensors' device and (CUDA) current stream;
//   Be::WeightGemm<T>             the per-step GEMM against a fixed weight (PlainWeightGemm);
//   Be::RowChunks                 how batch rows split over threads (OneRange: not at all);
//   Be::FusedStep<Kern, T>        a step fusing the recurrent GEMM into the pointwise pass
//                                 (NoFusedStep: never);
//   Be::dispatch(dtype, op, f)    the scalar types it runs.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <type_traits>

#include "fusedrnn/buffers.h"
#include "fusedrnn/layer_plan.h"
#include "fusedrnn/saved_release.h"
#include "fusedrnn/step_args.h"
#include "fusedrnn/thin_products.h"

namespace fusedrnn {

struct LayerFwdResult {
  at::Tensor output, h_n, c_n, ws;
};

struct LayerBwdResult {
  at::Tensor grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr;
  std::vector<at::Tensor> grad_ln;  // LayerNorm families, in LayerPlan::ln's order
};

// The per-step GEMM against a fixed weight: C[rows, N] = A[rows, K] op(W) + beta C, with
// op(W) = W^T ([N, K] stored) or W ([K, N] stored), used `steps` times. Built once per layer
// call, so a backend may specialise it to pack W once for all steps (the CPU does for long
// sequences, see cpu_backend.h).
template <class Blas, class T>
struct PlainWeightGemm {
  PlainWeightGemm(bool transW, int64_t N, int64_t K, const T* W, int64_t ldw, int64_t = 0)
      : transW_(transW), N_(N), K_(K), W_(W), ldw_(ldw) {}
  void operator()(int64_t rows, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    Blas::template gemm<T>(false, transW_, rows, N_, K_, T(1), A, lda, W_, ldw_, beta, C, ldc);
  }

 private:
  bool transW_;
  int64_t N_, K_;
  const T* W_;
  int64_t ldw_;
};

// Batch rows never interact inside a layer's time loop, so a backend may run the loop of
// disjoint row ranges [b0, b1) concurrently, each over all its steps with no per-step
// synchronisation (the CPU does for small per-step GEMMs, see cpu_backend.h). `step_flops`
// is the work of one step over all B rows. This policy: one range.
struct OneRange {
  template <class F>
  static void run(int64_t B, double /*step_flops*/, F&& f) {
    f(int64_t(0), B);
  }
};

// A backend may fuse a family's recurrent GEMM into its pointwise pass for some shapes (the
// CPU does for small-H LSTMs, see cpp/cpu/lstm_kernels.h). Built once per layer call (it may pack
// the weights), it then replaces a step's input projection (narrow inputs: x_t is passed),
// recurrent GEMM and Kern::forward, reading the running h as FwdStep::h. This policy: never.
template <class Kern, class T>
struct NoFusedStep {
  NoFusedStep(const LayerPlan&, const T* /*w_in*/, int64_t /*KI*/, bool /*per_step*/) {}
  // Whether the step takes layer p's input rows itself even when they are wide (see
  // forward_input), instead of one GEMM over all N rows before the loop.
  static bool takes_wide_input(const LayerPlan&) { return false; }
  bool active() const { return false; }
  void operator()(const FwdStep<T>&, const T* /*x_t*/) const {}
};

template <class T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The step processed just before step t (reverse layers run T-1 .. 0), or -1 for the first.
inline int64_t previous_step(const LayerPlan& p, int64_t t) {
  const int64_t tp = p.reverse ? t + 1 : t - 1;
  return (tp < 0 || tp >= p.T) ? -1 : tp;
}

// prev[rows of step t] = the state that step t read: the previous step's rows, or the
// initial state for rows that start at t (shrinking batch forward, growing batch reversed).
inline at::Tensor previous_states(const LayerPlan& p, const at::Tensor& seq,
                                  const at::Tensor& init) {
  const int64_t W = seq.size(1);
  at::Tensor prev = buffer_empty({p.N, W}, seq.options());
  if (p.N == 0) return prev;
  if (!p.packed) {
    const int64_t rest = p.N - p.B;
    if (!p.reverse) {
      prev.narrow(0, 0, p.B).copy_(init);
      prev.narrow(0, p.B, rest).copy_(seq.narrow(0, 0, rest));
    } else {
      prev.narrow(0, 0, rest).copy_(seq.narrow(0, p.B, rest));
      prev.narrow(0, rest, p.B).copy_(init);
    }
    return prev;
  }
  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t rows = p.bs[t], off = p.off[t];
    const int64_t tp = previous_step(p, t);
    const int64_t from_seq = tp < 0 ? 0 : std::min(rows, p.bs[tp]);
    if (from_seq > 0) prev.narrow(0, off, from_seq).copy_(seq.narrow(0, p.off[tp], from_seq));
    if (rows > from_seq)
      prev.narrow(0, off + from_seq, rows - from_seq)
          .copy_(init.narrow(0, from_seq, rows - from_seq));
  }
  return prev;
}

// The running state: a copy of the given initial state (contiguous), or zeros.
template <class Blas, class T>
at::Tensor state_copy(const at::Tensor& init, int64_t rows, int64_t cols,
                      const at::TensorOptions& opts) {
  if (!init.defined()) return buffer_zeros({rows, cols}, opts);
  at::Tensor s = buffer_empty({rows, cols}, opts);
  Blas::template copy_rows<T>(rows, cols, ptr<T>(init), ptr<T>(s));
  return s;
}

// Half/bf16 only (kWideCarry, step_args.h): a carry buffer in Carry<T> (float), initialised
// from `init` (converted) or zeros; `to_storage` rounds one back to T at the op boundary.
template <class T>
at::Tensor wide_carry(const at::Tensor& init, int64_t rows, int64_t cols,
                      const at::TensorOptions& opts) {
  const auto co = opts.dtype(c10::CppTypeToScalarType<Carry<T>>::value);
  return init.defined() ? init.to(co, false, /*copy=*/true).contiguous()
                        : buffer_zeros({rows, cols}, co);
}

template <class T>
at::Tensor to_storage(const at::Tensor& t) {
  return kWideCarry<T> && t.defined() ? t.to(c10::CppTypeToScalarType<T>::value) : t;
}

// The input projection of a narrow input (the K = I GEMM is a rank-I update that only
// streams memory): an [N, GH] xg buffer costs a write and a read of N*GH values from DRAM,
// while a per-step [B, GH] buffer stays in cache. At I = 1 (the sine and stock workloads) the
// all-steps projection (MKL's ger) took 13% of the LSTM forward pass.
constexpr int64_t kStepInputMaxI = 16;

inline bool input_per_step(const LayerPlan& p) { return p.I <= kStepInputMaxI && p.T > 1; }

// The input side of a forward pass. RNN/LSTM: both biases add to the same pre-activation,
// so they are summed once (step_bias) and added in the pointwise pass (addmm would first copy
// the broadcast bias into all N rows). A single step (the cell ops) has only B rows: addmm
// there, with no summed-bias buffer. GRU keeps b_ih in the projection: b_hn sits inside the
// reset product; per step, b_ih rides in the GEMM as a weight column against a column of
// ones appended to x (xin = [x | 1], win = [W_ih | b_ih]).
struct FwdInput {
  bool per_step = false, bias_in_xg = false;
  at::Tensor step_bias, xin, win;
  int64_t KI = 0;  // columns of xin
};

template <class Tr, class Kern, class Be, class T>
FwdInput forward_input(const LayerPlan& p) {
  using Blas = typename Be::Blas;
  const int64_t GH = Tr::kGates * p.H;
  const auto opts = p.x.options();
  FwdInput in;
  in.per_step = input_per_step(p) || Be::template FusedStep<Kern, T>::takes_wide_input(p);
  in.bias_in_xg = p.b_ih.defined() && (Tr::kSplitHidden || p.T == 1);
  in.step_bias = p.b_hh;
  in.xin = p.x;
  in.win = p.w_ih;
  if constexpr (kWideCarry<T>) {  // half/bf16: the per-step bias, and its sum, in float
    if (!in.bias_in_xg && p.b_ih.defined()) {
      in.step_bias = wide_carry<T>(p.b_ih, 0, 0, opts);
      if (p.b_hh.defined()) in.step_bias.add_(p.b_hh);
    } else if (in.step_bias.defined()) {
      in.step_bias = wide_carry<T>(in.step_bias, 0, 0, opts);
    }
  } else if (!in.bias_in_xg && p.b_ih.defined()) {
    in.step_bias = p.b_ih;
    if (p.b_hh.defined()) {  // raw backend call: a dispatched add costs ~1 us of a cell step
      in.step_bias = buffer_empty({GH}, opts);
      Blas::template add_rows<T>(1, GH, ptr<T>(p.b_ih), ptr<T>(p.b_hh), ptr<T>(in.step_bias));
    }
  }
  if (in.per_step && Tr::kSplitHidden && p.b_ih.defined()) {
    in.xin = at::constant_pad_nd(p.x, {0, 1}, 1);  // x with a ones column: 13 us, cat 52 (sine)
    in.win = at::cat({p.w_ih, p.b_ih.view({GH, 1})}, 1);
  }
  in.KI = in.xin.size(1);
  return in;
}

// The buffers of a forward pass: the results (out, h, c, ws) and the per-step ones.
struct FwdBuffers {
  at::Tensor xg;  // [N, GH] projected input, or [B, GH] per step (narrow input)
  at::Tensor out, h, c, ws;
  at::Tensor hg;    // [B, GH] recurrent GEMM result (none when the step is fused)
  at::Tensor hraw;  // projected LSTM: [B, H] the unprojected h
};

// The time loop: per step the recurrent GEMM into hg and one fused pointwise pass (or the
// backend's fused step instead), then the projection. Rows [b0, b1) of every step run
// together; state buffers (h, c, hg, per-step xg, hraw) are indexed by batch row.
template <class Tr, class Kern, class Be, class T>
void forward_steps(const LayerPlan& p, const FwdInput& in,
                   const typename Be::template FusedStep<Kern, T>& fused, FwdBuffers& f) {
  using Blas = typename Be::Blas;
  using WeightGemm = typename Be::template WeightGemm<T>;
  const int64_t H = p.H, P = p.P, GH = Tr::kGates * H, WS = Tr::kWs * H, KI = in.KI;
  const bool fuse = fused.active(), per_step = in.per_step;
  const T* xin_p = ptr<T>(in.xin);
  const Carry<T>* bhh = ptr<Carry<T>>(in.step_bias);
  T *xg_p = ptr<T>(f.xg), *out_p = ptr<T>(f.out), *h_p = ptr<T>(f.h);
  Carry<T>* c_p = ptr<Carry<T>>(f.c);
  T *hg_p = ptr<T>(f.hg), *ws_p = ptr<T>(f.ws), *hraw_p = ptr<T>(f.hraw);
  // Steps = 0 where the fused step replaces them: nothing to pack.
  const WeightGemm rec(true, GH, P, ptr<T>(p.w_hh), P, fuse ? 0 : p.T);  // h W_hh^T
  const WeightGemm inp(true, GH, KI, ptr<T>(in.win), KI, per_step && !fuse ? p.T : 0);
  const WeightGemm prj(true, P, H, ptr<T>(p.w_hr), H, p.T);  // h_raw W_hr^T

  auto rows_loop = [&](int64_t b0, int64_t b1) {
    T* h_c = h_p + b0 * P;
    Carry<T>* c_c = c_p ? c_p + b0 * H : nullptr;
    T* hg_c = hg_p ? hg_p + b0 * GH : nullptr;
    T* hraw_c = hraw_p ? hraw_p + b0 * H : nullptr;
    for (int64_t s = 0; s < p.T; ++s) {
      const int64_t t = p.reverse ? p.T - 1 - s : s;
      const int64_t rows = std::min(p.bs[t], b1) - b0, off = p.off[t] + b0;
      if (rows <= 0) continue;
      if (per_step && !fuse) inp(rows, xin_p + off * KI, KI, T(0), xg_p + b0 * GH, GH);
      if (!fuse) rec(rows, h_c, P, T(0), hg_c, GH);
      FwdStep<T> st;
      st.rows = rows;
      st.H = H;
      st.xg = per_step ? (fuse ? nullptr : xg_p + b0 * GH) : xg_p + off * GH;  // fused: x_t
      st.hg = hg_c;
      st.b_hh = bhh;
      st.h = h_c;
      st.c = c_c;
      st.out = p.proj ? hraw_c : out_p + off * P;
      st.ld_out = p.proj ? H : P;
      st.write_h = !p.proj;
      st.ws = (WS && p.keep_workspace) ? ws_p + off * WS : nullptr;  // kernels skip a null ws
      st.ld_ws = WS;
      if (fuse) {
        fused(st, per_step ? xin_p + off * KI : nullptr);
      } else {
        Kern::template forward<T>(st);
      }
      if (p.proj) {
        prj(rows, hraw_c, H, T(0), out_p + off * P, P);
        Blas::template copy_rows<T>(rows, P, out_p + off * P, h_c);
      }
    }
  };
  const double proj_flops = p.proj ? 2.0 * p.B * P * H : 0.0;
  Be::RowChunks::run(p.B, 2.0 * p.B * GH * (P + (per_step ? KI : 0)) + proj_flops, rows_loop);
}

template <class Tr, class Kern, class Be, class T>
LayerFwdResult layer_forward(const LayerPlan& p) {
  using Blas = typename Be::Blas;
  const int64_t H = p.H, P = p.P, GH = Tr::kGates * H, WS = Tr::kWs * H;
  const auto opts = p.x.options();
  const FwdInput in = forward_input<Tr, Kern, Be, T>(p);
  const typename Be::template FusedStep<Kern, T> fused(p, ptr<T>(in.win), in.KI, in.per_step);
  const bool fuse = fused.active();  // then no hg and no per-step xg buffer
  FwdBuffers f;
  if (in.per_step) {
    f.xg = buffer_empty({fuse ? 0 : p.B, GH}, opts);
  } else if (in.bias_in_xg) {
    f.xg = buffer_empty({p.N, GH}, opts);
    at::addmm_out(f.xg, p.b_ih, p.x, p.w_ih.t());
  } else {
    f.xg = buffer_mm(p.x, p.w_ih.t());
  }
  f.out = buffer_empty({p.N, P}, opts);
  f.h = state_copy<Blas, T>(p.h0, p.B, P, opts);
  if constexpr (Tr::kHasCell && kWideCarry<T>) {
    f.c = wide_carry<T>(p.c0, p.B, H, opts);
  } else if constexpr (Tr::kHasCell) {
    f.c = state_copy<Blas, T>(p.c0, p.B, H, opts);
  }
  f.hg = buffer_empty({fuse ? 0 : p.B, GH}, opts);
  f.ws = buffer_empty({p.keep_workspace ? p.N : 0, WS}, opts);  // inference: none
  if (p.proj) f.hraw = buffer_empty({p.B, H}, opts);
  forward_steps<Tr, Kern, Be, T>(p, in, fused, f);
  LayerFwdResult r;
  r.output = f.out.view(p.out_shape(P));
  r.h_n = f.h;
  r.c_n = to_storage<T>(f.c);
  r.ws = f.ws;
  return r;
}

// Whether backend Be has a one-row cell step (Be::one_row_forward, marked by kOneRowStep).
template <class Be, class = void>
struct HasOneRowStep : std::false_type {};
template <class Be>
struct HasOneRowStep<Be, std::void_t<decltype(Be::kOneRowStep)>> : std::true_type {};

// One step of the cell ops (T = 1, hx given, no projection): layer_forward's kernels without its
// sequence buffers. xg = b_ih + x W_ih^T (b_ih copied in, then a GEMM with beta = 1, as addmm)
// and hg = h W_hh^T share one scratch buffer; the pointwise pass writes h' / c' straight into
// the results (c' in place over a copy of c, GRU's h' over a copy of h, which it reads). Four
// allocations (scratch, h', c', ws) instead of layer_forward's seven and a dispatched addmm:
// a B=1, H=64 step is ~1 us of arithmetic in ~12 us of op. Not for half/bf16 (wide carries).
// One row without a workspace goes to the backend's one-row step where it has one (the CPU's
// one_row_step.h: no scratch, one pass).
template <class Tr, class Kern, class Be, class T>
LayerFwdResult cell_forward(const LayerPlan& p) {
  static_assert(!kWideCarry<T>, "cell_forward: float / double only");
  using Blas = typename Be::Blas;
  using WeightGemm = typename Be::template WeightGemm<T>;
  const int64_t B = p.B, H = p.H, GH = Tr::kGates * H, WS = Tr::kWs * H;
  const auto opts = p.x.options();
  LayerFwdResult r;
  r.h_n = buffer_empty({B, H}, opts);
  if constexpr (Tr::kSplitHidden) Blas::template copy_rows<T>(B, H, ptr<T>(p.h0), ptr<T>(r.h_n));
  if constexpr (Tr::kHasCell) r.c_n = state_copy<Blas, T>(p.c0, B, H, opts);
  // The Elman cell has no workspace (rnn_cell returns h' alone): no tensor for it.
  if (WS > 0) r.ws = buffer_empty({p.keep_workspace ? B : 0, WS}, opts);
  r.output = r.h_n;  // not an op result of the cell ops (they return h', c', ws)
  FwdStep<T> st;
  st.rows = B;
  st.H = H;
  st.b_hh = ptr<T>(p.b_hh);
  st.h = ptr<T>(r.h_n);
  st.c = ptr<T>(r.c_n);
  st.out = ptr<T>(r.h_n);
  st.ld_out = H;
  st.ws = (WS && p.keep_workspace) ? ptr<T>(r.ws) : nullptr;
  st.ld_ws = WS;
  // A backend's one-row step (the CPU's one_row_step.h): no scratch, one pass.
  if constexpr (HasOneRowStep<Be>::value) {
    if (B == 1 && Be::template one_row_forward<Tr, Kern, T>(p, st)) return r;
  }
  at::Tensor scratch = buffer_empty({2 * B * GH}, opts);
  T *xg = ptr<T>(scratch), *hg = xg + B * GH;
  if (p.b_ih.defined())
    for (int64_t b = 0; b < B; ++b) Blas::template copy_rows<T>(1, GH, ptr<T>(p.b_ih), xg + b * GH);
  WeightGemm(true, GH, p.I, ptr<T>(p.w_ih), p.I, 1)(B, ptr<T>(p.x), p.I,
                                                    p.b_ih.defined() ? T(1) : T(0), xg, GH);
  WeightGemm(true, GH, H, ptr<T>(p.w_hh), H, 1)(B, ptr<T>(p.h0), H, T(0), hg, GH);
  st.xg = xg;
  st.hg = hg;
  if (B > 0) Kern::template forward<T>(st);
  return r;
}

// Bias gradients: column sums of dG [N, GH]. On the CPU one pass of the kernel table's
// (thin_products.h; the sine LSTM's [15680, 128]: 0.22 -> ~0.05 ms on an AMD EPYC, where MKL's
// GEMV against ones takes its generic path), else a GEMV against ones (MKL, threaded; on an Intel
// Xeon 1.5-2x faster than ATen's sum(0) on these tall matrices); elsewhere sum(0) keeps its float
// accumulation for half/bf16.
inline at::Tensor column_sums(const at::Tensor& m) {
  if (m.is_cpu()) {
    at::Tensor s = thin_column_sums(m);
    return s.defined() ? s : at::mv(m.t(), at::ones({m.size(0)}, m.options()));
  }
  return m.sum(0);
}

// What a backward pass works on (layer_backward): the states each step read, the running
// state gradients (carry) and the gate gradients.
struct BwdBuffers {
  // The state each step read: without packing, straight from the saved rows of the step
  // processed before it (out; LSTM: ws's c column) or the initial state, with no [N, P] /
  // [N, H] copies (memory and page faults). Packed batches gather them (previous_states).
  bool direct = true;
  at::Tensor h0, hprev, c0, cprev;
  at::Tensor carry_h, carry_c;  // dh / dc flowing back: [B, P] / [B, H]
  at::Tensor dh_f;              // GRU, half/bf16 only: the direct path z * dh in float
  // Gate gradients. RNN/LSTM: dG [N, GH], the same on the input and the hidden side. GRU: the
  // two sides share r and z, so both fit in dG [N, 4H] = [r | z | hn | n] (not two [N, 3H]
  // buffers): the hidden side (r, z, hn) is its first 3H columns (dgh), the input side
  // (r, z, n) columns 0:2H and 3H:4H.
  int64_t LDG = 0;
  at::Tensor dG, dgh;
  at::Tensor dR, hraw, dhraw;  // projected LSTM: d(out) [N, P], o tanh(c) [N, H], d(h_raw)
};

template <class Tr>
BwdBuffers backward_buffers(const LayerPlan& p, const at::Tensor& out, const at::Tensor& ws,
                            const at::Tensor& grad_hn, const at::Tensor& grad_cn) {
  const int64_t H = p.H, P = p.P, GH = Tr::kGates * H;
  const auto opts = p.x.options();
  BwdBuffers b;
  b.direct = !p.packed;
  b.h0 = p.h0.defined() ? p.h0 : buffer_zeros({p.B, P}, opts);
  if (!b.direct) b.hprev = previous_states(p, out, b.h0);
  if constexpr (Tr::kHasCell) {
    b.c0 = p.c0.defined() ? p.c0 : buffer_zeros({p.B, H}, opts);
    if (!b.direct) b.cprev = previous_states(p, ws.narrow(1, 4 * H, H), b.c0);
    b.carry_c = grad_cn.defined() ? grad_cn.clone() : buffer_zeros({p.B, H}, opts);
  }
  b.carry_h = grad_hn.defined() ? grad_hn.clone() : buffer_zeros({p.B, P}, opts);
  b.LDG = Tr::kSplitHidden ? 4 * H : GH;
  b.dG = buffer_empty({p.N, b.LDG}, opts);
  b.dgh = Tr::kSplitHidden ? b.dG.narrow(1, 0, GH) : b.dG;
  if (p.proj) {
    b.dR = buffer_empty({p.N, P}, opts);
    b.hraw = buffer_empty({p.N, H}, opts);
    b.dhraw = buffer_empty({p.B, H}, opts);
  }
  return b;
}

// Half/bf16 (kWideCarry, step_args.h): dc and the GRU's direct path dh_f carried in float;
// carry_h then only receives each step's dG W_hh (beta = 0), summed with dh_f after the loop.
template <class Tr, class T>
void widen_carries(const LayerPlan& p, BwdBuffers& b, const at::Tensor& grad_hn,
                   const at::Tensor& grad_cn) {
  const auto opts = p.x.options();
  if constexpr (Tr::kHasCell) b.carry_c = wide_carry<T>(grad_cn, p.B, p.H, opts);
  if constexpr (Tr::kSplitHidden) {
    b.dh_f = wide_carry<T>(grad_hn, p.B, p.P, opts);
    b.carry_h.zero_();
  }
}

// The states that step t's rows [off, ...) (batch rows from b0) read: h_prev [., P] and, for
// a cell family, c_prev with its row stride. Without packing, in place: the saved rows of the
// step processed before (out; c in the workspace's column 4H, ld WS) or the initial states;
// packed, the gathered copies (BwdBuffers::hprev / cprev, ld P / H).
template <bool kCell, class T>
void previous_rows(const LayerPlan& p, const BwdBuffers& b, int64_t t, int64_t off, int64_t b0,
                   const T* out_p, const T* ws_p, int64_t WS, const T*& h_prev, const T*& c_prev,
                   int64_t& ld_c) {
  const int64_t P = p.P, H = p.H;
  if (b.direct) {
    const int64_t tp = previous_step(p, t);
    const bool first = tp < 0;
    const int64_t poff = first ? 0 : p.off[tp] + b0;
    h_prev = first ? ptr<T>(b.h0) + b0 * P : out_p + poff * P;
    if constexpr (kCell) {
      c_prev = first ? ptr<T>(b.c0) + b0 * H : ws_p + poff * WS + 4 * H;
      ld_c = first ? H : WS;
    }
  } else {
    h_prev = ptr<T>(b.hprev) + off * P;
    c_prev = b.cprev.defined() ? ptr<T>(b.cprev) + off * H : nullptr;
    ld_c = H;
  }
}

// The time loop in reverse: per step one fused pointwise pass (Kern::backward) writes dG's
// rows, then dh_{t-1} = dG_t W_hh (GRU: added to the direct path z * dh already in carry_h).
template <class Tr, class Kern, class Be, class T>
void backward_steps(const LayerPlan& p, BwdBuffers& b, const at::Tensor& gout,
                    const at::Tensor& out, const at::Tensor& ws) {
  using Blas = typename Be::Blas;
  using WeightGemm = typename Be::template WeightGemm<T>;
  const int64_t H = p.H, P = p.P, GH = Tr::kGates * H, WS = Tr::kWs * H, LDG = b.LDG;
  const T *gout_p = ptr<T>(gout), *out_p = ptr<T>(out), *ws_p = ptr<T>(ws);
  T *carry_h_p = ptr<T>(b.carry_h), *dg_p = ptr<T>(b.dG);
  Carry<T>* carry_c_p = ptr<Carry<T>>(b.carry_c);
  Carry<T>* dh_f_p = ptr<Carry<T>>(b.dh_f);
  T *dR_p = ptr<T>(b.dR), *hraw_p = ptr<T>(b.hraw), *dhraw_p = ptr<T>(b.dhraw);
  const WeightGemm rec(false, P, GH, ptr<T>(p.w_hh), P, p.w_hh_used ? p.T : 0);
  const WeightGemm prj(false, H, P, ptr<T>(p.w_hr), H, p.T);  // dh_raw = dr W_hr

  auto rows_loop = [&](int64_t b0, int64_t b1) {
    T* carry_h_c = carry_h_p + b0 * P;
    Carry<T>* carry_c_c = carry_c_p ? carry_c_p + b0 * H : nullptr;
    Carry<T>* dh_f_c = dh_f_p ? dh_f_p + b0 * P : nullptr;
    T* dhraw_c = dhraw_p ? dhraw_p + b0 * H : nullptr;
    for (int64_t s = p.T - 1; s >= 0; --s) {
      const int64_t t = p.reverse ? p.T - 1 - s : s;
      const int64_t rows = std::min(p.bs[t], b1) - b0, off = p.off[t] + b0;
      if (rows <= 0) continue;
      BwdStep<T> st;
      st.rows = rows;
      st.H = H;
      if (p.proj) {
        T* dr = dR_p + off * P;
        Blas::template add_rows<T>(rows, P, gout_p ? gout_p + off * P : nullptr, carry_h_c, dr);
        prj(rows, dr, P, T(0), dhraw_c, H);
        st.dh_a = dhraw_c;
        st.ld_a = H;
        st.hraw = hraw_p + off * H;
      } else {
        st.dh_a = gout_p ? gout_p + off * P : nullptr;
        st.ld_a = P;
        st.dh_b = carry_h_c;
        st.ld_b = P;
      }
      if constexpr (Tr::kWs == 0) {
        st.ws = out_p + off * P;  // Elman RNN: the saved value is h_t itself
        st.ld_ws = P;
      } else {
        st.ws = ws_p + off * WS;
        st.ld_ws = WS;
      }
      previous_rows<Tr::kHasCell>(p, b, t, off, b0, out_p, ws_p, WS, st.h_prev, st.c_prev, st.ld_c);
      st.dc = carry_c_c;
      st.dgi = Tr::kSplitHidden ? nullptr : dg_p + off * LDG;
      st.dgh = Tr::kSplitHidden ? dg_p + off * LDG : nullptr;
      st.ld_dg = LDG;
      st.dh_carry = Tr::kSplitHidden ? carry_h_c : nullptr;
      st.dh_f = dh_f_c;
      Kern::template backward<T>(st);
      if (p.w_hh_used)
        rec(rows, dg_p + off * LDG, LDG, Tr::kSplitHidden && !dh_f_c ? T(1) : T(0), carry_h_c, P);
    }
  };
  const double proj_flops = p.proj ? 2.0 * p.B * P * H : 0.0;
  Be::RowChunks::run(p.B, 2.0 * p.B * GH * P + proj_flops, rows_loop);
  if (!p.w_hh_used) {
    b.carry_h.zero_();  // no hidden gradient was asked for (cells only)
  } else if (b.dh_f.defined()) {
    b.carry_h = to_storage<T>(b.dh_f.add_(b.carry_h));
  }
}

// The input side's gradients after the loop, one GEMM each: dx = dGi W_ih (if asked, else an
// empty [0]) and dW_ih = dGi^T x.
template <class Tr>
void input_side_grads(const LayerPlan& p, const BwdBuffers& b, bool input_grad, LayerBwdResult& r) {
  const int64_t H = p.H, GH = Tr::kGates * H;
  const auto opts = p.x.options();
  r.grad_input = buffer_empty({0}, opts);
  if constexpr (Tr::kSplitHidden) {  // input side in two column blocks: (r, z) and n
    const at::Tensor drz = b.dG.narrow(1, 0, 2 * H), dn = b.dG.narrow(1, 3 * H, H);
    if (input_grad) {
      r.grad_input = buffer_mm(drz, p.w_ih.narrow(0, 0, 2 * H));
      r.grad_input.addmm_(dn, p.w_ih.narrow(0, 2 * H, H));
      r.grad_input = r.grad_input.view(p.in_shape);
    }
    r.grad_w_ih = buffer_empty({GH, p.I}, opts);
    at::Tensor w_rz = r.grad_w_ih.narrow(0, 0, 2 * H), w_n = r.grad_w_ih.narrow(0, 2 * H, H);
    mm_into(w_rz, drz.t(), p.x);
    mm_into(w_n, dn.t(), p.x);
  } else {
    if (input_grad) r.grad_input = buffer_mm(b.dG, p.w_ih).view(p.in_shape);
    r.grad_w_ih = buffer_mm(b.dG.t(), p.x);
  }
}

// After the loop: the input side (input_side_grads; false: the caller has them, ln_driver.h's
// closed form), then one GEMM each: dW_hh = dGh^T h_prev (h_prev read in place unless
// packed), dW_hr = dR^T h_raw.
template <class Tr>
void weight_grads(const LayerPlan& p, const BwdBuffers& b, const at::Tensor& out, bool input_grad,
                  LayerBwdResult& r, bool input_side = true) {
  const int64_t P = p.P, GH = Tr::kGates * p.H;
  const auto opts = p.x.options();
  if (input_side) input_side_grads<Tr>(p, b, input_grad, r);
  if (p.T == 0) {
    r.grad_w_hh = buffer_zeros({GH, P}, opts);
  } else if (b.direct) {  // the steps after the first read out's rows; the first read h0
    const int64_t rest = p.N - p.B;
    const int64_t first = p.reverse ? rest : 0, later = p.reverse ? 0 : p.B;
    const int64_t src = p.reverse ? p.B : 0;
    r.grad_w_hh = buffer_mm(b.dgh.narrow(0, later, rest).t(), out.narrow(0, src, rest));
    if (p.h0.defined()) r.grad_w_hh.addmm_(b.dgh.narrow(0, first, p.B).t(), p.h0);
  } else {
    r.grad_w_hh = buffer_mm(b.dgh.t(), b.hprev);
  }
  r.grad_w_hr = p.proj ? buffer_mm(b.dR.t(), b.hraw) : buffer_empty({0}, opts);
}

// Bias gradients: one reduction of dG; GRU picks its two sides' columns from it. One row (a
// B = 1 cell step, a T = 1 layer call) is its own sum: dG's row itself, which nothing writes
// after this, so a single step holds no buffer more than torch.nn's.
template <class Tr>
void bias_grads(const LayerPlan& p, const BwdBuffers& b, LayerBwdResult& r) {
  const int64_t H = p.H, GH = Tr::kGates * H;
  const auto opts = p.x.options();
  at::Tensor sums;
  if (p.b_ih.defined() || p.b_hh.defined())
    sums = b.dG.size(0) == 1 ? b.dG.view({b.dG.size(1)}) : column_sums(b.dG);
  if (!p.b_ih.defined()) {
    r.grad_b_ih = buffer_empty({0}, opts);
  } else if (Tr::kSplitHidden) {
    r.grad_b_ih = at::cat({sums.narrow(0, 0, 2 * H), sums.narrow(0, 3 * H, H)});
  } else {
    r.grad_b_ih = sums;
  }
  if (!p.b_hh.defined()) {
    r.grad_b_hh = buffer_empty({0}, opts);
  } else if (Tr::kSplitHidden) {  // GRU: b_ih's gradient is a new tensor (cat), so no copy
    r.grad_b_hh = sums.narrow(0, 0, GH);
  } else {  // RNN/LSTM: the same sums as b_ih, in their own tensor
    r.grad_b_hh = sums.clone();
  }
}

// The cell ops' backward (T = 1, hx given, no projection), the counterpart of cell_forward:
// one pointwise pass into dG, dh = dG W_hh (only when hx needs it), and the weight gradients
// as raw GEMMs on dG's column blocks. layer_backward spends ~20 dispatched ATen calls (zeros,
// clones, narrows, mm, mv) on a step of ~1 us of arithmetic.
// saved: RNN h' (its pointwise backward reads the output), LSTM / GRU the workspace, which
// is let go of (saved reset, then release_saved(), saved_release.h) once the gate pass and
// dh are done, before the weight gradients are allocated; so is a GRU's z dh buffer when no
// hidden gradient is asked for.
template <class Tr, class Kern, class Be, class T>
LayerBwdResult cell_backward(const LayerPlan& p, const at::Tensor& gh, const at::Tensor& gc,
                             at::Tensor& saved, bool input_grad) {
  static_assert(!kWideCarry<T>, "cell_backward: float / double only");
  using Blas = typename Be::Blas;
  const int64_t B = p.B, H = p.H, I = p.I, GH = Tr::kGates * H;
  const int64_t LDG = Tr::kSplitHidden ? 4 * H : GH;
  const auto opts = p.x.options();
  BwdBuffers b;
  b.LDG = LDG;
  b.dG = buffer_empty({B, LDG}, opts);
  T* dg = ptr<T>(b.dG);
  LayerBwdResult r;
  const bool need_h = p.w_hh_used;  // else no hidden gradient is asked for
  // GRU: z dh comes out of the pointwise pass (then + dG W_hh), so it needs a buffer anyway.
  at::Tensor carry_h =
      need_h || Tr::kSplitHidden ? buffer_empty({B, H}, opts) : buffer_empty({0}, opts);
  r.grad_h0 = need_h ? carry_h : buffer_empty({0}, opts);
  r.grad_c0 = buffer_empty({0}, opts);
  BwdStep<T> st;
  st.rows = B;
  st.H = H;
  st.dh_a = ptr<T>(gh);
  st.ld_a = H;
  st.ws = ptr<T>(saved);
  st.ld_ws = Tr::kWs ? Tr::kWs * H : H;
  st.h_prev = ptr<T>(p.h0);
  if constexpr (Tr::kHasCell) {
    r.grad_c0 = state_copy<Blas, T>(gc, B, H, opts);  // zeros when gc is undefined
    st.c_prev = ptr<T>(p.c0);
    st.ld_c = H;
    st.dc = ptr<T>(r.grad_c0);  // dc in, dc_prev out
  }
  st.dgi = Tr::kSplitHidden ? nullptr : dg;
  st.dgh = Tr::kSplitHidden ? dg : nullptr;
  st.ld_dg = LDG;
  st.dh_carry = Tr::kSplitHidden ? ptr<T>(carry_h) : nullptr;  // GRU: z dh, then + dG W_hh
  if (B > 0) Kern::template backward<T>(st);
  if (need_h && B > 0) {  // (without need_h, w_hh may be a stand-in)
    const typename Be::template WeightGemm<T> rec(false, H, GH, ptr<T>(p.w_hh), H, 1);
    rec(B, dg, LDG, Tr::kSplitHidden ? T(1) : T(0), ptr<T>(r.grad_h0), H);
  }
  carry_h = at::Tensor();        // r.grad_h0 keeps it where it is the hidden gradient
  if constexpr (Tr::kWs != 0) {  // the workspace is read no more
    saved = at::Tensor();
    release_saved();
  }
  r.grad_w_ih = buffer_empty({GH, I}, opts);
  r.grad_w_hh = buffer_empty({GH, H}, opts);
  r.grad_input = input_grad ? buffer_empty({B, I}, opts) : buffer_empty({0}, opts);
  if (B == 0) {
    r.grad_w_ih.zero_();
    r.grad_w_hh.zero_();
  } else {
    const T *x = ptr<T>(p.x), *h0 = ptr<T>(p.h0), *wih = ptr<T>(p.w_ih);
    T *gwi = ptr<T>(r.grad_w_ih), *gi = ptr<T>(r.grad_input);
    // Input side: GRU's gate columns (r, z) and n (dG's columns 0:2H and 3H:4H); else all.
    const int64_t n0 = Tr::kSplitHidden ? 2 * H : GH;
    Blas::template gemm<T>(true, false, n0, I, B, T(1), dg, LDG, x, I, T(0), gwi, I);
    if (input_grad)
      Blas::template gemm<T>(false, false, B, I, n0, T(1), dg, LDG, wih, I, T(0), gi, I);
    if constexpr (Tr::kSplitHidden) {
      const T* dn = dg + 3 * H;
      Blas::template gemm<T>(true, false, H, I, B, T(1), dn, LDG, x, I, T(0), gwi + n0 * I, I);
      if (input_grad)
        Blas::template gemm<T>(false, false, B, I, H, T(1), dn, LDG, wih + n0 * I, I, T(1), gi, I);
    }
    // Hidden side: dG's first GH columns (GRU: r, z, hn).
    Blas::template gemm<T>(true, false, GH, H, B, T(1), dg, LDG, h0, H, T(0), ptr<T>(r.grad_w_hh),
                           H);
  }
  bias_grads<Tr>(p, b, r);
  return r;
}

template <class Tr, class Kern, class Be, class T>
LayerBwdResult layer_backward(const LayerPlan& p, const at::Tensor& gout /* [N,P] or undef */,
                              const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                              const at::Tensor& out /* [N,P] */, const at::Tensor& ws,
                              bool input_grad = true) {
  BwdBuffers b = backward_buffers<Tr>(p, out, ws, grad_hn, grad_cn);
  if constexpr (kWideCarry<T>) widen_carries<Tr, T>(p, b, grad_hn, grad_cn);
  backward_steps<Tr, Kern, Be, T>(p, b, gout, out, ws);
  LayerBwdResult r;
  weight_grads<Tr>(p, b, out, input_grad, r);
  bias_grads<Tr>(p, b, r);
  // Absent initial states get an empty [0] gradient, like every absent optional input.
  const auto opts = p.x.options();
  r.grad_h0 = p.h0.defined() ? b.carry_h : buffer_empty({0}, opts);
  r.grad_c0 = Tr::kHasCell && p.c0.defined() ? to_storage<T>(b.carry_c) : buffer_empty({0}, opts);
  return r;
}

}  // namespace fusedrnn
