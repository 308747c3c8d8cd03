// fusedrnn._C.cell_call(module, args): the cell modules' __call__ (modules.py, _cell_call) for
// the plain eager call in one C++ call. It reads from the module's and torch's Python state
// what _lean_call and _FusedCellBase.forward test in Python, then runs cell_step
// (module_fast_path.cpp). Why: those Python checks, the attribute reads and cell_step's
// nine-argument call were ~1.5 us of a ~3.4 us no-grad RNN cell step (B = 1, H = 64).
//
// It returns None, and the module takes its Python path (which handles or raises for the
// rest), unless:
// - the module: its class's forward is _FusedCellBase.forward and the instance sets no
//   forward of its own; no hooks of its own and no compiled __call__ (Module.compile());
//   weight_ih, weight_hh, bias_ih and bias_hh are in _parameters (not computed by a
//   parametrisation or set by a hook); its class's _fast_kind is an int, or RNNCell's
//   property, read here from `nonlinearity` ("tanh" or "relu");
// - torch: no global module hooks; nn.Module.__call__ is the one fusedrnn found at import
//   (torch.fx and export patch it); no forward-AD level open; the dynamo ONNX exporter not
//   running. torch.compile never calls this (modules.py tests is_compiling first); jit
//   tracing, torch.func transforms, autocast and torch-function modes are cell_step's tests.
//   Every global is read from its module's dict on each call, as the Python path reads it.
// The objects compared with are handed over once, at import (cell_call_init), and kept.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>

#include "fusedrnn/module_fast_path.h"

namespace fusedrnn {
namespace {

namespace py = pybind11;

struct CellCallRefs {
  PyObject* module_cls;    // torch.nn.Module
  PyObject* module_call;   // torch.nn.Module.__call__ as fusedrnn found it
  PyObject* base_forward;  // _FusedCellBase.forward
  PyObject* rnn_kind;      // RNNCell's _fast_kind property
  PyObject* nn_globals;    // torch.nn.modules.module's dict
  PyObject* ad_globals;    // torch.autograd.forward_ad's dict
  PyObject* onnx_globals;  // the dynamo ONNX exporter's flags module's dict, or null
};

CellCallRefs* refs = nullptr;  // set once by cell_call_init, never freed

// Interned names, made once (the GIL is held).
struct Names {
  PyObject *call, *forward, *fast_kind, *nonlinearity, *parameters, *compiled, *input_size,
      *hidden_size, *w_ih, *w_hh, *b_ih, *b_hh, *level, *onnx, *tanh, *relu;
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

PyObject* cell_call_impl(PyObject* self, PyObject* args) {
  const Names& n = names();
  if (refs == nullptr || !PyTuple_CheckExact(args)) Py_RETURN_NONE;
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  if (nargs < 1 || nargs > 2) Py_RETURN_NONE;
  PyTypeObject* type = Py_TYPE(self);
  if (_PyType_Lookup(type, n.forward) != refs->base_forward) Py_RETURN_NONE;
  if (!torch_state_plain(n)) Py_RETURN_NONE;
  PyObject* dict = PyObject_GenericGetDict(self, nullptr);  // new reference
  if (dict == nullptr) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  const py::object keep = py::reinterpret_steal<py::object>(dict);
  if (PyDict_GetItem(dict, n.forward) != nullptr) Py_RETURN_NONE;
  PyObject* compiled = PyDict_GetItem(dict, n.compiled);  // set by Module.compile()
  if (compiled == nullptr) compiled = _PyType_Lookup(type, n.compiled);
  if (compiled != Py_None) Py_RETURN_NONE;
  for (PyObject* key : n.own_hooks)
    if (!empty_dict_at(dict, key)) Py_RETURN_NONE;
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

// METH_FASTCALL: (module, args). C++ exceptions become Python ones.
PyObject* cell_call_fast(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  if (argc != 2) {
    PyErr_SetString(PyExc_TypeError, "cell_call(module, args) takes 2 arguments");
    return nullptr;
  }
  try {
    return cell_call_impl(argv[0], argv[1]);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyMethodDef cell_call_def = {"cell_call", reinterpret_cast<PyCFunction>(cell_call_fast),
                             METH_FASTCALL,
                             "The cell modules' plain eager call, or None (cell_call.cpp)."};

PyObject* module_dict(py::handle m) {
  PyObject* d = PyModule_GetDict(m.ptr());  // borrowed; modules live as long as the process
  if (d == nullptr) throw py::error_already_set();
  Py_INCREF(d);
  return d;
}

}  // namespace

void cell_call_init(py::handle module_cls, py::handle module_call, py::handle base_forward,
                    py::handle rnn_kind, py::handle nn_module, py::handle forward_ad,
                    py::handle onnx_flags) {
  auto* r = new CellCallRefs{module_cls.inc_ref().ptr(),
                             module_call.inc_ref().ptr(),
                             base_forward.inc_ref().ptr(),
                             rnn_kind.inc_ref().ptr(),
                             module_dict(nn_module),
                             module_dict(forward_ad),
                             onnx_flags.is_none() ? nullptr : module_dict(onnx_flags)};
  refs = r;  // a later call (a re-import) replaces the first; the old one stays allocated
}

void add_cell_call(py::module_& m) {
  PyObject* f = PyCFunction_New(&cell_call_def, nullptr);
  if (f == nullptr) throw py::error_already_set();
  m.add_object("cell_call", py::reinterpret_steal<py::object>(f));
  m.def("cell_call_init", &cell_call_init);
}

}  // namespace fusedrnn
