// fusedrnn._C.cell_call(module, args) and stack_call(module, args): the fused modules'
// __call__ (modules.py, _cell_call and _stack_call) for the plain eager call in one C++ call.
// Each reads from the module's and torch's Python state what _lean_call and the module's
// forward test in Python, then runs cell_step or stack_step (module_fast_path.cpp). Why:
// those Python checks, the attribute reads and the steps' many-argument calls were ~1.5 us
// of a ~3.4 us no-grad RNN cell step and ~2.6 us of a ~4.2 us T = 1 RNN layer call (B = 1).
//
// Each returns None, and the module takes its Python path (which handles or raises for the
// rest), unless:
// - the module (both): no forward set on the instance; no hooks of its own and no compiled
//   __call__ (Module.compile());
// - a cell: its class's forward is _FusedCellBase.forward; weight_ih, weight_hh, bias_ih and
//   bias_hh are in _parameters (not computed by a parametrisation or set by a hook); its
//   class's _fast_kind is an int, or RNNCell's property, read here from `nonlinearity`
//   ("tanh" or "relu");
// - a stack (RNN, LSTM, GRU, the LayerNorm LSTM / GRU): its class's forward is one of the
//   registered stack forwards and its _fast_step and _update_flat_weights are
//   _FusedRNNBase's (the eager LayerNorm twins override _fast_step); every _flat_weights
//   entry is the tensor of that name in _parameters (else the Python path rebuilds them, as
//   _update_flat_weights does); `mode` and the class's `_layernorm` name a stack kind; the
//   settings stack_step takes are plain ints / bools / floats in the instance dict;
// - torch: no global module hooks; nn.Module.__call__ is the one fusedrnn found at import
//   (torch.fx and export patch it); no forward-AD level open; the dynamo ONNX exporter not
//   running. torch.compile never calls these (modules.py tests is_compiling first); jit
//   tracing, torch.func transforms, autocast and torch-function modes are the steps' tests.
//   Every global is read from its module's dict on each call, as the Python path reads it.
// The objects compared with are handed over once, at import (module_call_init), and kept.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>

#include "fusedrnn/module_fast_path.h"

namespace fusedrnn {
namespace {

namespace py = pybind11;

struct CallRefs {
  PyObject* module_cls;       // torch.nn.Module
  PyObject* module_call;      // torch.nn.Module.__call__ as fusedrnn found it
  PyObject* cell_forward;     // _FusedCellBase.forward
  PyObject* rnn_kind;         // RNNCell's _fast_kind property
  PyObject* stack_forwards;   // a list: _FusedRNNBase.forward, _LayerNormRNNBase.forward
  PyObject* stack_fast_step;  // _FusedRNNBase._fast_step
  PyObject* stack_update;     // _FusedRNNBase._update_flat_weights
  PyObject* nn_globals;       // torch.nn.modules.module's dict
  PyObject* ad_globals;       // torch.autograd.forward_ad's dict
  PyObject* onnx_globals;     // the dynamo ONNX exporter's flags module's dict, or null
};

CallRefs* refs = nullptr;  // set once by module_call_init, never freed

// Interned names, made once (the GIL is held).
struct Names {
  PyObject *call, *forward, *fast_kind, *nonlinearity, *parameters, *compiled, *input_size,
      *hidden_size, *w_ih, *w_hh, *b_ih, *b_hh, *level, *onnx, *tanh, *relu;
  // the stacks': methods, weights, settings and modes
  PyObject *fast_step, *update, *flat, *flat_names, *layernorm, *mode, *bias, *num_layers,
      *bidirectional, *dropout, *training, *batch_first, *proj_size;
  PyObject* modes[4];  // RNN_TANH, RNN_RELU, LSTM, GRU: kStackRnnTanh + i
  PyObject* own_hooks[4];
  PyObject* global_hooks[4];
};

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

const Names& names() {
  static const Names n = [] {
    Names m;
    m.call = intern("__call__");
    m.forward = intern("forward");
    m.fast_kind = intern("_fast_kind");
    m.nonlinearity = intern("nonlinearity");
    m.parameters = intern("_parameters");
    m.compiled = intern("_compiled_call_impl");
    m.input_size = intern("input_size");
    m.hidden_size = intern("hidden_size");
    m.w_ih = intern("weight_ih");
    m.w_hh = intern("weight_hh");
    m.b_ih = intern("bias_ih");
    m.b_hh = intern("bias_hh");
    m.level = intern("_current_level");
    m.onnx = intern("_is_onnx_exporting");
    m.tanh = intern("tanh");
    m.relu = intern("relu");
    m.fast_step = intern("_fast_step");
    m.update = intern("_update_flat_weights");
    m.flat = intern("_flat_weights");
    m.flat_names = intern("_flat_weights_names");
    m.layernorm = intern("_layernorm");
    m.mode = intern("mode");
    m.bias = intern("bias");
    m.num_layers = intern("num_layers");
    m.bidirectional = intern("bidirectional");
    m.dropout = intern("dropout");
    m.training = intern("training");
    m.batch_first = intern("batch_first");
    m.proj_size = intern("proj_size");
    const char* modes[4] = {"RNN_TANH", "RNN_RELU", "LSTM", "GRU"};
    for (int i = 0; i < 4; ++i) m.modes[i] = intern(modes[i]);
    const char* own[4] = {"_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                          "_backward_pre_hooks"};
    const char* global[4] = {"_global_forward_hooks", "_global_forward_pre_hooks",
                             "_global_backward_hooks", "_global_backward_pre_hooks"};
    for (int i = 0; i < 4; ++i) {
      m.own_hooks[i] = intern(own[i]);
      m.global_hooks[i] = intern(global[i]);
    }
    return m;
  }();
  return n;
}

// dict[key] is a dict (an OrderedDict is one) and empty. False when absent or not a dict.
bool empty_dict_at(PyObject* dict, PyObject* key) {
  PyObject* v = PyDict_GetItem(dict, key);  // borrowed
  return v != nullptr && PyDict_Check(v) && PyDict_GET_SIZE(v) == 0;
}

// An int attribute from an instance dict; false when absent or not an int.
bool int_at(PyObject* dict, PyObject* key, int64_t& out) {
  PyObject* v = PyDict_GetItem(dict, key);
  if (v == nullptr || !PyLong_CheckExact(v)) return false;
  out = PyLong_AsLongLong(v);
  if (out == -1 && PyErr_Occurred()) {  // (an int beyond 64 bits)
    PyErr_Clear();
    return false;
  }
  return true;
}

// A bool attribute from an instance dict (True or False themselves).
bool bool_at(PyObject* dict, PyObject* key, bool& out) {
  PyObject* v = PyDict_GetItem(dict, key);
  if (v != Py_True && v != Py_False) return false;
  out = v == Py_True;
  return true;
}

// A float (or int) attribute from an instance dict, as float() reads it.
bool float_at(PyObject* dict, PyObject* key, double& out) {
  PyObject* v = PyDict_GetItem(dict, key);
  if (v == nullptr || !(PyFloat_CheckExact(v) || PyLong_CheckExact(v))) return false;
  out = PyFloat_AsDouble(v);
  if (out == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

// Torch's global state, as _lean_call and _fast_path_open test it.
bool torch_state_plain(const Names& n) {
  for (PyObject* key : n.global_hooks)
    if (!empty_dict_at(refs->nn_globals, key)) return false;
  if (_PyType_Lookup(reinterpret_cast<PyTypeObject*>(refs->module_cls), n.call) !=
      refs->module_call)
    return false;
  int64_t level = 0;
  if (!int_at(refs->ad_globals, n.level, level) || level >= 0) return false;
  if (refs->onnx_globals != nullptr) {
    PyObject* f = PyDict_GetItem(refs->onnx_globals, n.onnx);
    if (f != nullptr && f != Py_False) return false;
  }
  return true;
}

// The cell kind of the module's class (CellKind), or -1.
int64_t cell_kind(const Names& n, PyTypeObject* type, PyObject* dict) {
  PyObject* k = _PyType_Lookup(type, n.fast_kind);
  if (k != nullptr && PyLong_CheckExact(k)) {
    const long v = PyLong_AsLong(k);
    if (v == -1 && PyErr_Occurred()) PyErr_Clear();
    return v >= kCellRnnTanh && v <= kCellGru ? v : -1;
  }
  if (k == nullptr || k != refs->rnn_kind) return -1;
  PyObject* nl = PyDict_GetItem(dict, n.nonlinearity);
  if (nl == nullptr || !PyUnicode_CheckExact(nl)) return -1;
  if (PyUnicode_Compare(nl, n.tanh) == 0) return kCellRnnTanh;
  if (PyUnicode_Compare(nl, n.relu) == 0) return kCellRnnRelu;
  PyErr_Clear();  // (a comparison cannot fail for two str, but stay clean)
  return -1;
}

// The module's instance dict (a new reference) when the call is the plain eager one that
// its __call__ would send straight to forward (torch's state, the instance's forward, hooks
// and compile), else null. args: 1 or 2 positionals.
PyObject* plain_call_dict(const Names& n, PyObject* self, PyObject* args) {
  if (refs == nullptr || !PyTuple_CheckExact(args)) return nullptr;
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  if (nargs < 1 || nargs > 2) return nullptr;
  if (!torch_state_plain(n)) return nullptr;
  PyObject* dict = PyObject_GenericGetDict(self, nullptr);  // new reference
  if (dict == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  py::object keep = py::reinterpret_steal<py::object>(dict);
  if (PyDict_GetItem(dict, n.forward) != nullptr) return nullptr;
  PyObject* compiled = PyDict_GetItem(dict, n.compiled);  // set by Module.compile()
  if (compiled == nullptr) compiled = _PyType_Lookup(Py_TYPE(self), n.compiled);
  if (compiled != Py_None) return nullptr;
  for (PyObject* key : n.own_hooks)
    if (!empty_dict_at(dict, key)) return nullptr;
  return keep.release().ptr();
}

PyObject* cell_call_impl(PyObject* self, PyObject* args) {
  const Names& n = names();
  PyTypeObject* type = Py_TYPE(self);
  if (refs == nullptr || _PyType_Lookup(type, n.forward) != refs->cell_forward) Py_RETURN_NONE;
  PyObject* dict = plain_call_dict(n, self, args);
  if (dict == nullptr) Py_RETURN_NONE;
  const py::object keep = py::reinterpret_steal<py::object>(dict);
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  const int64_t kind = cell_kind(n, type, dict);
  if (kind < 0) Py_RETURN_NONE;
  PyObject* params = PyDict_GetItem(dict, n.parameters);
  if (params == nullptr || !PyDict_Check(params)) Py_RETURN_NONE;
  // Owned: cell_step may release the GIL, and another thread could then replace a parameter.
  py::object w[4];
  PyObject* keys[4] = {n.w_ih, n.w_hh, n.b_ih, n.b_hh};
  for (int i = 0; i < 4; ++i) {
    PyObject* t = PyDict_GetItem(params, keys[i]);
    if (t == nullptr) Py_RETURN_NONE;
    w[i] = py::reinterpret_borrow<py::object>(t);
  }
  int64_t input_size = 0, hidden_size = 0;
  if (!int_at(dict, n.input_size, input_size) || !int_at(dict, n.hidden_size, hidden_size))
    Py_RETURN_NONE;
  const py::handle hx = nargs == 2 ? py::handle(PyTuple_GET_ITEM(args, 1)) : py::none();
  py::object out = cell_step(kind, input_size, hidden_size, PyTuple_GET_ITEM(args, 0), hx, w[0],
                             w[1], w[2], w[3]);
  return out.release().ptr();
}

// The stack kind (StackKind) of the module's class `_layernorm` and instance `mode`, or -1:
// modules.py's _STACK_KIND.
int64_t stack_kind(const Names& n, PyTypeObject* type, PyObject* dict) {
  PyObject* ln = PyDict_GetItem(dict, n.layernorm);
  if (ln == nullptr) ln = _PyType_Lookup(type, n.layernorm);
  if (ln != Py_True && ln != Py_False) return -1;
  PyObject* mode = PyDict_GetItem(dict, n.mode);
  if (mode == nullptr || !PyUnicode_CheckExact(mode)) return -1;
  for (int64_t i = 0; i < 4; ++i) {
    if (PyUnicode_Compare(mode, n.modes[i]) != 0) continue;
    if (ln == Py_False) return kStackRnnTanh + i;
    if (i == 2) return kStackLnLstm;
    if (i == 3) return kStackLnGru;
    return -1;
  }
  PyErr_Clear();
  return -1;
}

// Whether every _flat_weights entry is the tensor of its name in _parameters (the test of
// _FusedRNNBase._update_flat_weights, which otherwise has torch.nn rebuild the list).
bool flat_weights_current(const Names& n, PyObject* dict, PyObject* flat) {
  PyObject* names = PyDict_GetItem(dict, n.flat_names);
  PyObject* params = PyDict_GetItem(dict, n.parameters);
  if (names == nullptr || !PyList_Check(names) || params == nullptr || !PyDict_Check(params))
    return false;
  const Py_ssize_t k = PyList_GET_SIZE(flat);
  if (PyList_GET_SIZE(names) != k) return false;
  for (Py_ssize_t i = 0; i < k; ++i) {
    PyObject* w = PyDict_GetItem(params, PyList_GET_ITEM(names, i));
    if (w == nullptr || w != PyList_GET_ITEM(flat, i)) return false;
  }
  return true;
}

bool is_stack_forward(PyObject* f) {
  if (f == nullptr || !PyList_Check(refs->stack_forwards)) return false;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs->stack_forwards); ++i)
    if (PyList_GET_ITEM(refs->stack_forwards, i) == f) return true;
  return false;
}

PyObject* stack_call_impl(PyObject* self, PyObject* args) {
  const Names& n = names();
  PyTypeObject* type = Py_TYPE(self);
  if (refs == nullptr || !is_stack_forward(_PyType_Lookup(type, n.forward)) ||
      _PyType_Lookup(type, n.fast_step) != refs->stack_fast_step ||
      _PyType_Lookup(type, n.update) != refs->stack_update)
    Py_RETURN_NONE;
  PyObject* dict = plain_call_dict(n, self, args);
  if (dict == nullptr) Py_RETURN_NONE;
  const py::object keep = py::reinterpret_steal<py::object>(dict);
  const int64_t kind = stack_kind(n, type, dict);
  if (kind < 0) Py_RETURN_NONE;
  PyObject* flat = PyDict_GetItem(dict, n.flat);
  if (flat == nullptr || !PyList_Check(flat) || !flat_weights_current(n, dict, flat))
    Py_RETURN_NONE;
  bool bias = false, bidirectional = false, training = false, batch_first = false;
  int64_t num_layers = 0, input_size = 0, hidden_size = 0, proj_size = 0;
  double dropout = 0;
  if (!bool_at(dict, n.bias, bias) || !bool_at(dict, n.bidirectional, bidirectional) ||
      !bool_at(dict, n.training, training) || !bool_at(dict, n.batch_first, batch_first) ||
      !int_at(dict, n.num_layers, num_layers) || !int_at(dict, n.input_size, input_size) ||
      !int_at(dict, n.hidden_size, hidden_size) || !int_at(dict, n.proj_size, proj_size) ||
      !float_at(dict, n.dropout, dropout))
    Py_RETURN_NONE;
  // Owned: stack_step reads the list before it releases the GIL, but another thread could
  // replace it in the dict meanwhile.
  const py::object weights = py::reinterpret_borrow<py::object>(flat);
  const py::handle hx =
      PyTuple_GET_SIZE(args) == 2 ? py::handle(PyTuple_GET_ITEM(args, 1)) : py::handle(Py_None);
  py::object out =
      stack_step(kind, PyTuple_GET_ITEM(args, 0), hx, weights, bias, num_layers, bidirectional,
                 dropout, training, batch_first, input_size, hidden_size, proj_size);
  return out.release().ptr();
}

// METH_FASTCALL: (module, args). C++ exceptions become Python ones.
template <PyObject* (*Impl)(PyObject*, PyObject*)>
PyObject* call_fast(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  if (argc != 2) {
    PyErr_SetString(PyExc_TypeError, "takes 2 arguments: (module, args)");
    return nullptr;
  }
  try {
    return Impl(argv[0], argv[1]);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyMethodDef cell_call_def = {"cell_call", reinterpret_cast<PyCFunction>(call_fast<cell_call_impl>),
                             METH_FASTCALL,
                             "The cell modules' plain eager call, or None (module_call.cpp)."};
PyMethodDef stack_call_def = {
    "stack_call", reinterpret_cast<PyCFunction>(call_fast<stack_call_impl>), METH_FASTCALL,
    "The sequence modules' plain eager call, or None (module_call.cpp)."};

PyObject* module_dict(py::handle m) {
  PyObject* d = PyModule_GetDict(m.ptr());  // borrowed; modules live as long as the process
  if (d == nullptr) throw py::error_already_set();
  Py_INCREF(d);
  return d;
}

}  // namespace

void module_call_init(py::handle module_cls, py::handle module_call, py::handle cell_forward,
                      py::handle rnn_kind, py::handle stack_forwards, py::handle stack_fast_step,
                      py::handle stack_update, py::handle nn_module, py::handle forward_ad,
                      py::handle onnx_flags) {
  if (!PyList_Check(stack_forwards.ptr()))
    throw py::type_error("module_call_init: stack_forwards must be a list");
  auto* r = new CallRefs{
      module_cls.inc_ref().ptr(),     module_call.inc_ref().ptr(),
      cell_forward.inc_ref().ptr(),   rnn_kind.inc_ref().ptr(),
      stack_forwards.inc_ref().ptr(), stack_fast_step.inc_ref().ptr(),
      stack_update.inc_ref().ptr(),   module_dict(nn_module),
      module_dict(forward_ad),        onnx_flags.is_none() ? nullptr : module_dict(onnx_flags)};
  refs = r;  // a later call (a re-import) replaces the first; the old one stays allocated
}

void add_module_call(py::module_& m) {
  for (PyMethodDef* def : {&cell_call_def, &stack_call_def}) {
    PyObject* f = PyCFunction_New(def, nullptr);
    if (f == nullptr) throw py::error_already_set();
    m.add_object(def->ml_name, py::reinterpret_steal<py::object>(f));
  }
  m.def("module_call_init", &module_call_init);
}

}  // namespace fusedrnn
