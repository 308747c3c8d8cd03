// fusedrnn._C.cell_step and stack_step: a module's eager CPU call in one pybind call, for the
// plain case only; anything else returns None and the module takes its Python path, which
// raises torch.nn's errors and handles what these do not.
//
// Plain: float32 / float64 CPU tensors of one dtype, every one an exact torch.Tensor or
// nn.Parameter (no __torch_function__ subclass), no torch-function mode, no jit tracing (which
// the TorchScript ONNX exporter runs under), no torch.func transform, autocast off; the caller
// (modules.py, _fast_path_open) has already excluded torch.compile, forward AD and the dynamo
// ONNX exporter. A cell: batched input [B, input_size],
// hx None or [B, hidden_size] states (a pair for the LSTM). A stack: batched 3-D input (either
// batch_first), not packed, T and B above 0, hx None or of torch.nn's shapes.
//
// They then call what the Python path calls, through the dispatcher (so dispatch modes, the
// profiler and the op's own checks behave the same): the op below autograd when nothing needs
// a gradient, else its C++ autograd entry ({fam}_cell_autograd / {fam}_stack_autograd,
// autograd.cpp). What is saved for backward is therefore the same, except for one step of a
// one-layer, one-direction RNN / LSTM / GRU (T = 1, no projection): that is the cell op's
// call (its result h' viewed as output, a copy for the Elman cell in training, and copied as
// h_n: an op's results never alias), so it saves what the cell saves and its bits are the cell
// module's. Why: torch.ops' Python call (argument parsing against the schema, boxing) and the
// modules' Python preamble were ~7 of the ~11 us of a B = 1 cell step and ~14 of the ~34 us
// of a T = 1 layer call, more than the maths (bench `stream`).
#include "fusedrnn/module_fast_path.h"

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fusedrnn/op_handles.h"
#include "fusedrnn/step_args.h"

namespace fusedrnn {
namespace {

namespace py = pybind11;
using at::Tensor;
using OptT = std::optional<Tensor>;

using ops::GruCellSig;
using ops::LstmCellSig;
using ops::op;
using ops::RnnCellSig;
using ops::StackAutogradSig;
using ops::StackSig;

// A torch-function mode, jit tracing, a torch.func transform or autocast: the Python path's
// cases. Read from the thread's dispatch keys as torch reads them: a functorch transform
// includes its DynamicLayer keys (torch._C._are_functorch_transforms_active), autocast is on
// for a device when its key is not excluded (at::autocast::is_autocast_enabled).
bool not_plain_eager() {
  if (at::impl::torch_function_mode_enabled() || torch::jit::tracer::isTracing()) return true;
  const c10::impl::LocalDispatchKeySet keys = c10::impl::tls_local_dispatch_key_set();
  if (keys.included_.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
      keys.included_.has(c10::DispatchKey::FuncTorchDynamicLayerBackMode))
    return true;
  return !(c10::autocast_dispatch_keyset - keys.excluded_).empty();
}

// The tensor behind `h` when it is an exact Tensor / Parameter on the CPU of dtype `dt`.
const Tensor* plain(py::handle h, at::ScalarType dt) {
  PyObject* o = h.ptr();
  if (!THPVariable_CheckExact(o)) return nullptr;
  const Tensor& t = THPVariable_Unpack(o);
  if (t.scalar_type() != dt || !t.device().is_cpu() || t.layout() != at::kStrided) return nullptr;
  return &t;
}

// An optional bias: None, or a plain tensor. False when it is neither.
bool plain_opt(py::handle h, at::ScalarType dt, OptT& out) {
  if (h.is_none()) return true;
  const Tensor* t = plain(h, dt);
  if (t == nullptr) return false;
  out = *t;
  return true;
}

// A state [B, H] (the fast path takes batched calls only).
const Tensor* plain_state(py::handle h, at::ScalarType dt, int64_t B, int64_t H) {
  const Tensor* t = plain(h, dt);
  if (t == nullptr || t->dim() != 2 || t->size(0) != B || t->size(1) != H) return nullptr;
  return t;
}

bool needs_grad(std::initializer_list<const Tensor*> ts, const OptT& b_ih, const OptT& b_hh) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : ts)
    if (t->requires_grad()) return true;
  return (b_ih && b_ih->requires_grad()) || (b_hh && b_hh->requires_grad());
}

// An alias of t's memory with the given sizes and strides, without a view record: for tensors
// no autograd graph will see (a no-grad call's operands and results). It shares t's storage
// and version counter, as a view would.
Tensor plain_alias(const Tensor& t, at::IntArrayRef sizes, at::IntArrayRef strides) {
  c10::TensorImpl* impl = t.unsafeGetTensorImpl();
  auto copy = impl->shallow_copy_and_detach(impl->version_counter(), true);
  copy->set_sizes_and_strides(sizes, strides, impl->storage_offset());
  return Tensor(std::move(copy));
}

// Whether a step of B rows is worth releasing the GIL for (kSmallStepMacs, step_args.h):
// below it the release costs more than other Python threads would gain.
bool release_gil(int64_t kind, int64_t B, int64_t I, int64_t H) {
  const int64_t gates = kind == kCellLstm ? 4 : kind == kCellGru ? 3 : 1;
  return B * gates * H * (I + H) >= kSmallStepMacs;
}

// An LSTM's hx: a tuple or list of two, as torch.nn takes it. False when it is not one.
bool state_pair(py::handle hx, py::object& h, py::object& c) {
  if (!PyTuple_Check(hx.ptr()) && !PyList_Check(hx.ptr())) return false;
  const py::sequence pair = py::reinterpret_borrow<py::sequence>(hx);
  if (py::len(pair) != 2) return false;
  h = pair[0];
  c = pair[1];
  return true;
}

py::object wrap(Tensor t) {
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(t)));
}

// The cell op of `kind` (CellKind): below autograd, or its C++ autograd entry when `grad`.
// c (LSTM only) is undefined otherwise. Throws the op's c10::Error.
void run_cell(int64_t kind, bool grad, const Tensor& x, const Tensor& h, const Tensor& c,
              const Tensor& wi, const Tensor& wh, const OptT& bi, const OptT& bh, Tensor& hy,
              Tensor& cy) {
  std::optional<at::AutoDispatchBelowAutograd> below;
  if (!grad) below.emplace();
  if (kind == kCellLstm) {
    static const auto fwd = op<LstmCellSig>("lstm_cell");
    static const auto fwd_ag = op<LstmCellSig>("lstm_cell_autograd");
    std::tie(hy, cy, std::ignore) = (grad ? fwd_ag : fwd).call(x, h, c, wi, wh, bi, bh);
  } else if (kind == kCellGru) {
    static const auto fwd = op<GruCellSig>("gru_cell");
    static const auto fwd_ag = op<GruCellSig>("gru_cell_autograd");
    hy = std::get<0>((grad ? fwd_ag : fwd).call(x, h, wi, wh, bi, bh));
  } else {
    static const auto tanh = op<RnnCellSig>("rnn_tanh_cell");
    static const auto tanh_ag = op<RnnCellSig>("rnn_tanh_cell_autograd");
    static const auto relu = op<RnnCellSig>("rnn_relu_cell");
    static const auto relu_ag = op<RnnCellSig>("rnn_relu_cell_autograd");
    const auto& f = kind == kCellRnnTanh ? (grad ? tanh_ag : tanh) : (grad ? relu_ag : relu);
    hy = f.call(x, h, wi, wh, bi, bh);
  }
}

}  // namespace

py::object cell_step(int64_t kind, int64_t input_size, int64_t hidden_size, py::handle input,
                     py::handle hx, py::handle w_ih, py::handle w_hh, py::handle b_ih,
                     py::handle b_hh) {
  const py::object none = py::none();
  if (kind < kCellRnnTanh || kind > kCellGru) return none;
  if (not_plain_eager()) return none;
  if (!THPVariable_CheckExact(w_ih.ptr())) return none;
  const at::ScalarType dt = THPVariable_Unpack(w_ih.ptr()).scalar_type();
  if (dt != at::kFloat && dt != at::kDouble) return none;
  const Tensor* wi = plain(w_ih, dt);
  const Tensor* wh = plain(w_hh, dt);
  const Tensor* x = plain(input, dt);
  OptT bi, bh;
  if (!wi || !wh || !x || !plain_opt(b_ih, dt, bi) || !plain_opt(b_hh, dt, bh)) return none;
  if (x->dim() != 2 || x->size(1) != input_size) return none;
  const int64_t B = x->size(0);
  const bool lstm = kind == kCellLstm;

  // States: given ones (checked), or zeros as torch.nn makes them (one tensor for h and c).
  std::array<const Tensor*, 2> given = {nullptr, nullptr};
  Tensor zeros;
  if (hx.is_none()) {
    zeros = at::zeros({B, hidden_size}, x->options());
    given = {&zeros, &zeros};
  } else if (lstm) {
    py::object h, c;
    if (!state_pair(hx, h, c)) return none;
    given = {plain_state(h, dt, B, hidden_size), plain_state(c, dt, B, hidden_size)};
    if (!given[0] || !given[1]) return none;
  } else {
    given[0] = plain_state(hx, dt, B, hidden_size);
    if (!given[0]) return none;
  }

  const Tensor xin = x->contiguous();
  const Tensor h = given[0]->contiguous();
  const Tensor c = lstm ? given[1]->contiguous() : Tensor();
  const bool grad = lstm ? needs_grad({x, given[0], given[1], wi, wh}, bi, bh)
                         : needs_grad({x, given[0], wi, wh}, bi, bh);
  Tensor hy, cy;
  try {
    std::optional<py::gil_scoped_release> no_gil;
    if (release_gil(kind, B, input_size, hidden_size)) no_gil.emplace();
    run_cell(kind, grad, xin, h, c, *wi, *wh, bi, bh, hy, cy);
  } catch (const c10::Error&) {
    // The op refused the call (say, a weight of the wrong shape): the Python path makes the
    // same call and raises the error as torch.ops does (its Python exception type).
    return none;
  }
  if (lstm) return py::make_tuple(wrap(std::move(hy)), wrap(std::move(cy)));
  return wrap(std::move(hy));
}

namespace {

// A stack's state [L*D, B, W].
const Tensor* plain_stack_state(py::handle h, at::ScalarType dt, int64_t LD, int64_t B, int64_t W) {
  const Tensor* t = plain(h, dt);
  if (t == nullptr || t->dim() != 3 || t->size(0) != LD || t->size(1) != B || t->size(2) != W)
    return nullptr;
  return t;
}

}  // namespace

static_assert(kStackRnnTanh == kCellRnnTanh && kStackRnnRelu == kCellRnnRelu &&
                  kStackLstm == kCellLstm && kStackGru == kCellGru,
              "stack_step's single step passes its kind to run_cell");

py::object stack_step(int64_t kind, py::handle input, py::handle hx, py::handle weights,
                      bool has_biases, int64_t num_layers, bool bidirectional, double dropout,
                      bool train, bool batch_first, int64_t input_size, int64_t hidden_size,
                      int64_t proj_size) {
  const py::object none = py::none();
  if (kind < kStackRnnTanh || kind > kStackLnGru) return none;
  if (not_plain_eager()) return none;
  if (!PyList_Check(weights.ptr()) || PyList_GET_SIZE(weights.ptr()) == 0) return none;
  PyObject* w0 = PyList_GET_ITEM(weights.ptr(), 0);
  if (!THPVariable_CheckExact(w0)) return none;
  const at::ScalarType dt = THPVariable_Unpack(w0).scalar_type();
  if (dt != at::kFloat && dt != at::kDouble) return none;
  std::vector<Tensor> ws;
  ws.reserve(PyList_GET_SIZE(weights.ptr()));
  bool grad = at::GradMode::is_enabled();
  bool any_grad = false;
  for (Py_ssize_t k = 0; k < PyList_GET_SIZE(weights.ptr()); ++k) {
    const Tensor* w = plain(PyList_GET_ITEM(weights.ptr(), k), dt);
    if (w == nullptr) return none;
    any_grad = any_grad || w->requires_grad();
    ws.push_back(*w);
  }
  const Tensor* x = plain(input, dt);
  if (x == nullptr || x->dim() != 3 || x->size(2) != input_size) return none;
  const int64_t T = x->size(batch_first ? 1 : 0), B = x->size(batch_first ? 0 : 1);
  if (T == 0 || B == 0) return none;
  const bool lstm = kind == kStackLstm || kind == kStackLnLstm;
  const int64_t LD = num_layers * (bidirectional ? 2 : 1);
  const int64_t W = proj_size > 0 ? proj_size : hidden_size;
  OptT h0, c0;
  if (!hx.is_none()) {
    if (lstm) {
      py::object hp, cp;
      if (!state_pair(hx, hp, cp)) return none;
      const Tensor* h = plain_stack_state(hp, dt, LD, B, W);
      const Tensor* c = plain_stack_state(cp, dt, LD, B, hidden_size);
      if (!h || !c) return none;
      h0 = h->contiguous();
      c0 = c->contiguous();
    } else {
      const Tensor* h = plain_stack_state(hx, dt, LD, B, hidden_size);
      if (!h) return none;
      h0 = h->contiguous();
    }
  }
  any_grad =
      any_grad || x->requires_grad() || (h0 && h0->requires_grad()) || (c0 && c0->requires_grad());
  grad = grad && any_grad;
  Tensor out, h_n, c_n;
  if (T == 1 && LD == 1 && proj_size == 0 && kind <= kStackGru &&
      ws.size() == (has_biases ? 4u : 2u)) {
    // One step of one layer and direction (a streaming call): the cell op, whose plan is a
    // quarter of the stack op's (~3 against ~8 us at B = 1, H = 64) and whose backward skips
    // the layer's weight-gradient GEMMs. h_n is a copy: an op's results never alias.
    // Without autograd, [B, *] aliases of the contiguous [1, B, *] tensors (and back) instead
    // of select / unsqueeze views: each view's record cost ~0.3 us of a ~10 us call.
    const bool alias = !grad && x->is_contiguous();
    const int64_t H = hidden_size;
    const Tensor x1 = alias ? plain_alias(*x, {B, input_size}, {input_size, 1})
                            : x->select(batch_first ? 1 : 0, 0).contiguous();
    const auto state = [&](const OptT& s) {
      if (!s) return at::zeros({B, H}, x->options());
      return alias ? plain_alias(*s, {B, H}, {H, 1}) : s->select(0, 0);
    };
    const Tensor h = state(h0);
    const Tensor c = lstm ? state(c0) : Tensor();
    const OptT bi = has_biases ? OptT(ws[2]) : std::nullopt;
    const OptT bh = has_biases ? OptT(ws[3]) : std::nullopt;
    try {
      std::optional<py::gil_scoped_release> no_gil;
      if (release_gil(kind, B, input_size, hidden_size)) no_gil.emplace();
      std::optional<at::AutoDispatchBelowAutograd> below;  // for the views and copies below too
      if (!grad) below.emplace();
      Tensor hy, cy;
      run_cell(kind, grad, x1, h, c, ws[0], ws[1], bi, bh, hy, cy);
      // [1, B, H]; batch_first: its transpose, as the stack path's. The Elman cell saves h'
      // itself for backward, so in training the output is a copy as well: a caller may edit
      // it in place before backward, as with torch.nn.RNN (B x H more, as torch.nn's stack).
      if (alias) {  // the shapes and strides of the views below
        const auto as_layer = [&](const Tensor& t) {
          return plain_alias(t, {1, B, H}, {B * H, H, 1});
        };
        out = batch_first ? plain_alias(hy, {B, 1, H}, {H, B * H, 1}) : as_layer(hy);
        h_n = as_layer(hy.clone());
        if (lstm) c_n = as_layer(cy);
      } else {
        out = (grad && kind <= kStackRnnRelu ? hy.clone() : hy).unsqueeze(0);
        if (batch_first) out = out.transpose(0, 1);
        h_n = hy.clone().unsqueeze(0);
        if (lstm) c_n = cy.unsqueeze(0);
      }
    } catch (const c10::Error&) {
      return none;  // the Python path makes the stack call and raises its error
    }
    py::object hidden = lstm
                            ? py::object(py::make_tuple(wrap(std::move(h_n)), wrap(std::move(c_n))))
                            : wrap(std::move(h_n));
    return py::make_tuple(wrap(std::move(out)), std::move(hidden));
  }
  const Tensor xin = (batch_first ? x->transpose(0, 1) : *x).contiguous();
  try {
    py::gil_scoped_release no_gil;
    if (grad) {
      static const auto* ag = new std::vector<c10::TypedOperatorHandle<StackAutogradSig>>{
          op<StackAutogradSig>("rnn_tanh_stack_autograd"),
          op<StackAutogradSig>("rnn_relu_stack_autograd"),
          op<StackAutogradSig>("lstm_stack_autograd"),
          op<StackAutogradSig>("gru_stack_autograd"),
          op<StackAutogradSig>("ln_lstm_stack_autograd"),
          op<StackAutogradSig>("ln_gru_stack_autograd")};
      std::tie(out, h_n, c_n, std::ignore) = (*ag)[kind].call(
          xin, std::nullopt, h0, c0, ws, has_biases, num_layers, bidirectional, dropout, train);
    } else {
      static const auto* fw = new std::vector<c10::TypedOperatorHandle<StackSig>>{
          op<StackSig>("rnn_tanh_stack"), op<StackSig>("rnn_relu_stack"),
          op<StackSig>("lstm_stack"),     op<StackSig>("gru_stack"),
          op<StackSig>("ln_lstm_stack"),  op<StackSig>("ln_gru_stack")};
      at::AutoDispatchBelowAutograd below;
      std::tie(out, h_n, c_n, std::ignore) =
          (*fw)[kind].call(xin, std::nullopt, h0, c0, ws, has_biases, num_layers, bidirectional,
                           dropout, train, false);
    }
  } catch (const c10::Error&) {
    return none;  // the Python path makes the same call and raises the error as torch.ops does
  }
  if (batch_first) out = out.transpose(0, 1);
  py::object hidden = lstm ? py::object(py::make_tuple(wrap(std::move(h_n)), wrap(std::move(c_n))))
                           : wrap(std::move(h_n));
  return py::make_tuple(wrap(std::move(out)), std::move(hidden));
}

}  // namespace fusedrnn
