// Autograd in C++ for what the modules call while training: {fam}_stack_autograd and
// {fam}_cell_autograd (CompositeImplicitAutograd) run the stack / cell op through a
// torch::autograd::Function whose backward is the op's backward op.
//
// They save what the Python autograd.Function of _autograd.py saves (the stack op: input,
// batch_sizes, hx, cx, the weights but the biases, output and `saved`; a cell: input, hx, cx,
// and w_ih / w_hh only when input / hx need a gradient; of the rest only shapes, as torch.nn),
// and give the same results; but the stack's output may be edited in place before backward,
// as torch.nn's RNN / GRU allow (recomputed then; StackFunction), and an LSTM / GRU cell node
// lets go of its workspace halfway through its backward, as torch.nn's graph does
// (saved_release.h). The Python Function stays the ops' Autograd kernel (torch.func
// transforms, forward-mode AD, torch.compile, double backward); these entry points only skip
// its Python work on every training step (~50-100 us, more than the maths of a small cell).
// The backward op runs below autograd unless a graph of the gradient is being built.
// The LayerNorm stacks (ln_lstm, ln_gru) share the stack schema: their LayerNorm weights
// follow the biases in each layer's slice of `weights`, so the bias positions (2, 3) hold.
#include <ATen/ATen.h>
#include <ATen/SavedTensorHooks.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fusedrnn/op_handles.h"
#include "fusedrnn/saved_release.h"
#include "fusedrnn/schemas.h"

namespace fusedrnn {
namespace {

using at::Tensor;
using OptT = std::optional<Tensor>;
using ops::GruCellSig;
using ops::LstmCellSig;
using ops::op;
using ops::RnnCellSig;
using ops::StackOut;
using ops::StackSig;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Tensor opt_or(const OptT& t) { return t.has_value() ? *t : Tensor(); }
OptT as_opt(const Tensor& t) { return t.defined() ? OptT(t) : std::nullopt; }

// A zero scalar of w's dtype and device, made once and kept: stand-ins then allocate nothing
// on a training step (a cell step at B = 1 holds no more than torch.nn's). The map is never
// freed, so no CUDA tensor is destroyed after the runtime at exit.
Tensor zero_scalar(const Tensor& w) {
  static std::mutex mu;
  static auto* cache = new std::map<std::tuple<int, int, int>, Tensor>();
  const auto key = std::make_tuple(static_cast<int>(w.scalar_type()),
                                   static_cast<int>(w.device().type()), w.device().index());
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, at::zeros({}, w.options())).first;
  return it->second;
}

// What the backward op gets for a weight whose values it does not read: a tensor of its shape
// (no memory), or, when the backward pass is recorded (create_graph), the weight itself, kept
// outside save_for_backward (no version check, as torch.nn saves nothing): double backward
// recomputes the forward from it.
Tensor stand_in(const Tensor& w) {
  if (at::GradMode::is_enabled()) return w;
  return zero_scalar(w).expand(w.sizes());
}

// t's data under another TensorImpl that shares its version counter, without autograd
// metadata: a node may keep it (no reference cycle through t's grad_fn) and still see edits.
Tensor sharing_version(const Tensor& t) {
  const auto* impl = t.unsafeGetTensorImpl();
  return Tensor(impl->shallow_copy_and_detach(impl->version_counter(), false));
}

OptT bias_arg(const Tensor& b) { return b.defined() ? OptT(stand_in(b)) : std::nullopt; }

// Runs the backward op below autograd unless the backward pass records (create_graph).
template <class F>
auto run_backward(F&& f) {
  if (at::GradMode::is_enabled()) return f();
  at::AutoDispatchBelowADInplaceOrView guard;
  return f();
}

// ---- the stack ops -------------------------------------------------------------------------
using StackBwdSig = StackOut(const OptT&, const OptT&, const OptT&, const Tensor&, const OptT&,
                             const OptT&, const OptT&, at::TensorList, bool, int64_t, bool,
                             const Tensor&, at::TensorList, bool);

// An output edited in place is recomputed in backward (StackFunction): from the same biases.
constexpr char kEditedBias[] =
    "one of the variables needed for gradient computation has been modified by an inplace "
    "operation: the output, edited in place since forward, is recomputed in backward, which "
    "needs its biases unchanged too; edited: ";

template <const char* kFam>
struct StackFunction : torch::autograd::Function<StackFunction<kFam>> {
  static const c10::TypedOperatorHandle<StackSig>& fwd_op() {
    static const auto fwd = op<StackSig>(std::string(kFam) + "_stack");
    return fwd;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& input, const OptT& batch_sizes,
                               const OptT& hx, const OptT& cx, at::TensorList weights,
                               bool has_biases, int64_t num_layers, bool bidirectional,
                               double dropout, bool train) {
    // No zero gradients for the workspace / saved results (an [N, 4H] zeros for a GRU).
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, h_n, c_n, saved] = fwd_op().call(input, batch_sizes, hx, cx, weights, has_biases,
                                                num_layers, bidirectional, dropout, train, true);
    // `out` is read by backward only as the top layer's hidden sequence, with one direction
    // (stack_driver.h). torch.nn's RNN / GRU let a caller edit their output in place before
    // backward (they save their own copies), so `out` is not version-checked: an edited one
    // is recomputed (see backward), unless dropout masks were drawn; those are not redrawn,
    // so there `out` is saved as it was (an edit raises, as torch.nn's LSTM on the CPU does).
    // Under saved-tensor hooks (torch.autograd.graph.saved_tensors_hooks, save_on_cpu) `out`
    // is saved as before too, so that the hooks pack it.
    const bool read = !bidirectional, masks = train && dropout > 0 && num_layers > 1;
    const bool own = read && !masks && !at::SavedTensorDefaultHooks::get_hooks().has_value();
    std::vector<Tensor> keep = {input, opt_or(batch_sizes), opt_or(hx), opt_or(cx),
                                read && !own ? out : Tensor()};
    // Biases are not read by backward (column sums of the gate gradients): shapes only.
    const int64_t per = int64_t(weights.size()) / (num_layers * (bidirectional ? 2 : 1));
    c10::List<Tensor> stand_ins;
    std::vector<int64_t> versions;  // when `own`: the output's, then the biases'
    if (own) versions.push_back(static_cast<int64_t>(out._version()));
    for (int64_t k = 0; k < int64_t(weights.size()); ++k) {
      const bool bias = has_biases && (k % per == 2 || k % per == 3);
      keep.push_back(bias ? Tensor() : weights[k]);
      stand_ins.push_back(bias ? weights[k] : Tensor());
      if (bias && own) versions.push_back(static_cast<int64_t>(weights[k]._version()));
    }
    keep.insert(keep.end(), saved.begin(), saved.end());
    ctx->save_for_backward(keep);
    if (own) {
      ctx->saved_data["out"] = sharing_version(out);
      ctx->saved_data["versions"] = std::move(versions);
    } else if (!read) {
      ctx->saved_data["out"] = zero_scalar(out).expand(out.sizes());
    }
    ctx->saved_data["stand_ins"] = stand_ins;
    ctx->saved_data["n_weights"] = static_cast<int64_t>(weights.size());
    ctx->saved_data["has_biases"] = has_biases;
    ctx->saved_data["num_layers"] = num_layers;
    ctx->saved_data["bidirectional"] = bidirectional;
    ctx->mark_non_differentiable(saved);
    variable_list result = {out, h_n, c_n};
    result.insert(result.end(), saved.begin(), saved.end());
    return result;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<StackBwdSig>(std::string(kFam) + "_stack_backward");
    const variable_list s = ctx->get_saved_variables();
    const int64_t nw = ctx->saved_data["n_weights"].toInt();
    const c10::List<Tensor> stand_ins = ctx->saved_data["stand_ins"].toTensorList();
    std::vector<Tensor> weights(s.begin() + 5, s.begin() + 5 + nw);
    for (int64_t k = 0; k < nw; ++k)
      if (!weights[k].defined()) weights[k] = stand_in(stand_ins.get(k));
    std::vector<Tensor> saved(s.begin() + 5 + nw, s.end());
    const bool input_grad = ctx->needs_input_grad(0);
    const bool has_biases = ctx->saved_data["has_biases"].toBool();
    const int64_t num_layers = ctx->saved_data["num_layers"].toInt();
    const bool bidirectional = ctx->saved_data["bidirectional"].toBool();
    Tensor out = s[4].defined() ? s[4] : ctx->saved_data["out"].toTensor();
    const auto v = ctx->saved_data.find("versions");
    if (v != ctx->saved_data.end() && out._version() != v->second.toIntList().get(0)) {
      // Edited in place since forward: the same forward again (no masks were drawn, so dropout
      // and train do not matter), from the saved (version-checked) arguments and the biases,
      // which must be unedited.
      const std::vector<int64_t> versions = v->second.toIntVector();
      std::vector<Tensor> full = weights;
      for (int64_t k = 0, b = 1; k < nw; ++k) {
        if (!stand_ins.get(k).defined()) continue;
        full[k] = stand_ins.get(k);
        TORCH_CHECK(full[k]._version() == versions[b++], kEditedBias, kFam, "_stack's biases");
      }
      at::AutoDispatchBelowADInplaceOrView guard;
      const at::NoGradGuard no_grad;
      std::vector<Tensor> again;
      std::tie(out, std::ignore, std::ignore, again) =
          fwd_op().call(s[0], as_opt(s[1]), as_opt(s[2]), as_opt(s[3]), full, has_biases,
                        num_layers, bidirectional, 0.0, false, true);
      saved = std::move(again);
    }
    auto [gi, ghx, gcx, gw] = run_backward([&] {
      return bwd.call(as_opt(grads[0]), as_opt(grads[1]), as_opt(grads[2]), s[0], as_opt(s[1]),
                      as_opt(s[2]), as_opt(s[3]), weights, has_biases, num_layers, bidirectional,
                      out, saved, input_grad);
    });
    // As save_for_backward's variables: let go of `out` unless the graph is kept.
    if (!torch::autograd::get_current_graph_task_keep_graph()) ctx->saved_data.erase("out");
    // One entry per forward argument (a list counts once per element).
    variable_list result = {input_grad ? gi : Tensor(), Tensor(), s[2].defined() ? ghx : Tensor(),
                            s[3].defined() ? gcx : Tensor()};
    result.insert(result.end(), gw.begin(), gw.end());
    result.resize(result.size() + 5);  // has_biases, num_layers, bidirectional, dropout, train
    return result;
  }
};

template <const char* kFam>
StackOut stack_autograd(const Tensor& input, const OptT& batch_sizes, const OptT& hx,
                        const OptT& cx, at::TensorList weights, bool has_biases, int64_t num_layers,
                        bool bidirectional, double dropout, bool train) {
  variable_list r = StackFunction<kFam>::apply(input, batch_sizes, hx, cx, weights, has_biases,
                                               num_layers, bidirectional, dropout, train);
  return {r[0], r[1], r[2], std::vector<Tensor>(r.begin() + 3, r.end())};
}

// ---- the cell ops ------------------------------------------------------------------------
// Saves the weights backward reads (w_ih for dx, w_hh for dh) and the shapes of the others.
// The RNN's `ws` is its output h' (save_for_backward: a differentiable output); LSTM / GRU
// pass their workspace as `own_ws` instead, kept in saved_data with its version so that
// backward can let go of it halfway (saved_release.h), checked as save_for_backward would.
void save_cell(AutogradContext* ctx, std::vector<Tensor> states, const Tensor& input,
               const Tensor& w_ih, const Tensor& w_hh, const Tensor& ws, bool need_x, bool need_h,
               const Tensor& own_ws = Tensor()) {
  std::vector<Tensor> keep = {input, need_x ? w_ih : Tensor(), need_h ? w_hh : Tensor(), ws};
  keep.insert(keep.end(), states.begin(), states.end());
  ctx->save_for_backward(keep);
  ctx->saved_data["w_ih"] = need_x ? Tensor() : w_ih;
  ctx->saved_data["w_hh"] = need_h ? Tensor() : w_hh;
  if (own_ws.defined()) {
    ctx->saved_data["ws"] = own_ws;
    ctx->saved_data["ws_version"] = static_cast<int64_t>(own_ws._version());
  }
}

struct CellSaved {
  AutogradContext* ctx = nullptr;
  Tensor input, w_ih, w_hh, ws;
  std::vector<Tensor> states;
  bool need_x, need_h;
};

CellSaved load_cell(AutogradContext* ctx) {
  const variable_list s = ctx->get_saved_variables();  // first: throws if already freed
  CellSaved c;
  c.ctx = ctx;
  c.input = s[0];
  // This backward's needs: a subset of the forward's (autograd.grad or backward(inputs=...)
  // may ask for the weights' gradients alone). A weight is where the forward put it: saved
  // when its product's input needed a gradient then, else only its shape is used.
  c.need_x = ctx->needs_input_grad(0);
  c.need_h = ctx->needs_input_grad(1);
  c.w_ih = s[1].defined() ? s[1] : stand_in(ctx->saved_data["w_ih"].toTensor());
  c.w_hh = s[2].defined() ? s[2] : stand_in(ctx->saved_data["w_hh"].toTensor());
  c.ws = s[3];
  if (!c.ws.defined()) {
    c.ws = ctx->saved_data.at("ws").toTensor();
    const int64_t saved_version = ctx->saved_data.at("ws_version").toInt();
    TORCH_CHECK(c.ws._version() == saved_version,
                "one of the variables needed for gradient computation has been modified by an "
                "inplace operation: the cell's workspace (its last output) is at version ",
                c.ws._version(), "; expected version ", saved_version, " instead");
  }
  c.states.assign(s.begin() + 4, s.end());
  return c;
}

// The callback of saved_release.h: the node's references to the workspace, dropped.
void release_cell_ws(void* p) {
  auto* c = static_cast<CellSaved*>(p);
  c->ctx->saved_data.erase("ws");
  c->ws.reset();
}

// release_cell_ws where the node may let go of the workspace during its backward: only when
// the graph is not kept (retain_graph) and the backward is not recorded (create_graph).
void (*cell_release_fn())(void*) {
  if (at::GradMode::is_enabled() || torch::autograd::get_current_graph_task_keep_graph())
    return nullptr;
  return &release_cell_ws;
}

// rnn_tanh / rnn_relu / gru: (input, hx, weights) -> hy; gru also returns its workspace.
using HCellBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const OptT&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptT&,
    const OptT&, const Tensor&, bool, bool);

template <const char* kFam, bool kGru>
struct HCellFunction : torch::autograd::Function<HCellFunction<kFam, kGru>> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& w_ih, const Tensor& w_hh, const OptT& b_ih,
                               const OptT& b_hh) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // No zero gradients for the workspace / saved results (an [N, 4H] zeros for a GRU).
    ctx->set_materialize_grads(false);
    Tensor hy, ws;
    if constexpr (kGru) {
      static const auto fwd = op<GruCellSig>("gru_cell");
      std::tie(hy, ws) = fwd.call(input, hx, w_ih, w_hh, b_ih, b_hh);
      ctx->mark_non_differentiable({ws});
    } else {
      static const auto fwd = op<RnnCellSig>(std::string(kFam) + "_cell");
      hy = fwd.call(input, hx, w_ih, w_hh, b_ih, b_hh);
      ws = hy;  // the Elman backward reads h' itself
    }
    if constexpr (kGru) {
      save_cell(ctx, {hx}, input, w_ih, w_hh, Tensor(), ctx->needs_input_grad(0),
                ctx->needs_input_grad(1), ws);
    } else {
      save_cell(ctx, {hx}, input, w_ih, w_hh, ws, ctx->needs_input_grad(0),
                ctx->needs_input_grad(1));
    }
    ctx->saved_data["b_ih"] = b_ih.has_value() ? *b_ih : Tensor();
    ctx->saved_data["b_hh"] = b_hh.has_value() ? *b_hh : Tensor();
    if constexpr (kGru) return {hy, ws};
    return {hy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<HCellBwdSig>(std::string(kFam) + "_cell_backward");
    CellSaved c = load_cell(ctx);
    const OptT b_ih = bias_arg(ctx->saved_data["b_ih"].toTensor());
    const OptT b_hh = bias_arg(ctx->saved_data["b_hh"].toTensor());
    const SavedReleaseScope release(kGru ? cell_release_fn() : nullptr, &c);
    auto [gi, ghx, gwi, gwh, gbi, gbh] = run_backward([&] {
      return bwd.call(as_opt(grads[0]), c.input, c.states[0], c.w_ih, c.w_hh, b_ih, b_hh, c.ws,
                      c.need_x, c.need_h);
    });
    return {c.need_x ? gi : Tensor(), c.need_h ? ghx : Tensor(), gwi, gwh,
            b_ih ? gbi : Tensor(),    b_hh ? gbh : Tensor()};
  }
};

// A cell's required tensors, checked before autograd's apply reads their devices (an
// undefined one, torch.ops' None, would fail there as 'tensor does not have a device'); the
// op's own checks give the same messages for the no-grad call.
void check_cell_args(const std::string& op, const Tensor& input, const Tensor& hx,
                     const Tensor& w_ih, const Tensor& w_hh, const Tensor* cx = nullptr) {
  TORCH_CHECK(input.defined(), "fusedrnn::", op, ": input is undefined");
  TORCH_CHECK(hx.defined(), "fusedrnn::", op, ": hx is undefined (None); expected a tensor [B, H]");
  TORCH_CHECK(cx == nullptr || cx->defined(), "fusedrnn::", op,
              ": cx is undefined (None); expected a tensor [B, H]");
  TORCH_CHECK(w_ih.defined(), "fusedrnn::", op, ": w_ih is undefined (None)");
  TORCH_CHECK(w_hh.defined(), "fusedrnn::", op, ": w_hh is undefined (None)");
}

template <const char* kFam>
Tensor rnn_cell_autograd(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                         const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh) {
  check_cell_args(std::string(kFam) + "_cell", input, hx, w_ih, w_hh);
  return HCellFunction<kFam, false>::apply(input, hx, w_ih, w_hh, b_ih, b_hh)[0];
}

template <const char* kFam>
std::tuple<Tensor, Tensor> gru_cell_autograd(const Tensor& input, const Tensor& hx,
                                             const Tensor& w_ih, const Tensor& w_hh,
                                             const OptT& b_ih, const OptT& b_hh) {
  check_cell_args(std::string(kFam) + "_cell", input, hx, w_ih, w_hh);
  variable_list r = HCellFunction<kFam, true>::apply(input, hx, w_ih, w_hh, b_ih, b_hh);
  return {r[0], r[1]};
}

using LstmCellBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const OptT&, const OptT&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const OptT&, const OptT&, const Tensor&, bool, bool);

struct LstmCellFunction : torch::autograd::Function<LstmCellFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                               const OptT& b_ih, const OptT& b_hh) {
    static const auto fwd = op<LstmCellSig>("lstm_cell");
    at::AutoDispatchBelowADInplaceOrView guard;
    // No zero gradients for the workspace / saved results (an [N, 4H] zeros for a GRU).
    ctx->set_materialize_grads(false);
    auto [hy, cy, ws] = fwd.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
    ctx->mark_non_differentiable({ws});
    save_cell(ctx, {hx, cx}, input, w_ih, w_hh, Tensor(), ctx->needs_input_grad(0),
              ctx->needs_input_grad(1), ws);
    ctx->saved_data["b_ih"] = b_ih.has_value() ? *b_ih : Tensor();
    ctx->saved_data["b_hh"] = b_hh.has_value() ? *b_hh : Tensor();
    return {hy, cy, ws};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<LstmCellBwdSig>("lstm_cell_backward");
    CellSaved c = load_cell(ctx);
    const OptT b_ih = bias_arg(ctx->saved_data["b_ih"].toTensor());
    const OptT b_hh = bias_arg(ctx->saved_data["b_hh"].toTensor());
    const bool need_c = ctx->needs_input_grad(2);
    const SavedReleaseScope release(cell_release_fn(), &c);
    auto [gi, ghx, gcx, gwi, gwh, gbi, gbh] = run_backward([&] {
      return bwd.call(as_opt(grads[0]), as_opt(grads[1]), c.input, c.states[0], c.states[1], c.w_ih,
                      c.w_hh, b_ih, b_hh, c.ws, c.need_x, c.need_h);
    });
    return {c.need_x ? gi : Tensor(), c.need_h ? ghx : Tensor(), need_c ? gcx : Tensor(), gwi, gwh,
            b_ih ? gbi : Tensor(),    b_hh ? gbh : Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> lstm_cell_autograd(const Tensor& input, const Tensor& hx,
                                                      const Tensor& cx, const Tensor& w_ih,
                                                      const Tensor& w_hh, const OptT& b_ih,
                                                      const OptT& b_hh) {
  check_cell_args("lstm_cell", input, hx, w_ih, w_hh, &cx);
  variable_list r = LstmCellFunction::apply(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  return {r[0], r[1], r[2]};
}

constexpr char kRnnTanh[] = "rnn_tanh";
constexpr char kRnnRelu[] = "rnn_relu";
constexpr char kLstm[] = "lstm";
constexpr char kGru[] = "gru";
constexpr char kLnLstm[] = "ln_lstm";
constexpr char kLnGru[] = "ln_gru";

}  // namespace

SavedRelease& saved_release_slot() {
  static thread_local SavedRelease slot;
  return slot;
}

}  // namespace fusedrnn

TORCH_LIBRARY_FRAGMENT(fusedrnn, m) {
  for (const char* f : {"rnn_tanh", "rnn_relu", "lstm", "gru", "ln_lstm", "ln_gru"}) {
    m.def(fusedrnn::stack_schema(std::string(f) + "_stack_autograd", "").c_str(),
          {at::Tag::nondeterministic_seeded});
  }
  for (const char* f : {"rnn_tanh", "rnn_relu", "lstm", "gru"})
    m.def(fusedrnn::cell_schema(f, "_autograd").c_str());
}

TORCH_LIBRARY_IMPL(fusedrnn, CompositeImplicitAutograd, m) {
  using namespace fusedrnn;
  m.impl("rnn_tanh_stack_autograd", &stack_autograd<kRnnTanh>);
  m.impl("rnn_relu_stack_autograd", &stack_autograd<kRnnRelu>);
  m.impl("lstm_stack_autograd", &stack_autograd<kLstm>);
  m.impl("gru_stack_autograd", &stack_autograd<kGru>);
  m.impl("ln_lstm_stack_autograd", &stack_autograd<kLnLstm>);
  m.impl("ln_gru_stack_autograd", &stack_autograd<kLnGru>);
  m.impl("rnn_tanh_cell_autograd", &rnn_cell_autograd<kRnnTanh>);
  m.impl("rnn_relu_cell_autograd", &rnn_cell_autograd<kRnnRelu>);
  m.impl("gru_cell_autograd", &gru_cell_autograd<kGru>);
  m.impl("lstm_cell_autograd", &lstm_cell_autograd);
}
