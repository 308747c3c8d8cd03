"""Autograd of every fused op, derived from the op schemas (one rule, not one per op).

Each op ``F`` (a forward op such as ``lstm_layer``, and its backward op ``F_backward``) gets
one Autograd-key kernel: a new-style ``torch.autograd.Function`` (so ``torch.func``
transforms compose with it) whose

- ``backward`` calls ``F_backward`` (forward ops), or differentiates the readable reference
  twice (backward ops: gradients of gradients, see ``_double_backward``);
- ``jvp`` is forward-mode AD through the readable reference (``_reference_ops``: by
  ``torch.func.jvp`` inside torch.func transforms, reverse-over-reverse inside a
  ``forward_ad`` dual level), so ``torch.func.jvp`` / ``jacfwd`` / ``hessian`` and
  ``torch.autograd.forward_ad`` agree with ``torch.nn``;
- ``vmap`` runs the op once per batch entry (correct, not fast: ``torch.func.vmap`` of
  per-sample gradients or of model ensembles; dropout masks follow vmap's ``randomness``).

Argument wiring comes from the schemas: ``F_backward``'s ``grad_<out>`` arguments take the
incoming gradients of ``F``'s outputs, its other arguments are ``F``'s inputs and outputs of
the same name (saved for backward), and its ``grad_<arg>`` returns are the gradients of
``F``'s ``<arg>``. Only what backward reads is saved: ``w_ih`` only when ``input`` needs a
gradient, a cell's ``w_hh`` only when ``hx`` does, biases never (as ``torch.nn``; the op
then gets a stand-in of the right shape and skips the product). The modules' training
calls of the stack and cell ops take the same rule in C++ (cpp/autograd.cpp), without this
module's Python on every step; this Function stays the ops' Autograd kernel. Calls autograd will not record (no
input needs a gradient, no dual level open, no ``torch.func`` transform) go straight below
the Autograd key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd import forward_ad

from ._reference_ops import reference_forward

ops = torch.ops.fusedrnn
_C = torch._C


_NON_DIFF = ("workspace", "saved")  # results that only carry state to backward


def _norm(name: str) -> str:
    return name.replace("_", "")


def _transforms_active() -> bool:
    """A dual level (forward AD) or a torch.func transform is open: tangents or batched
    tensors may reach the op, so its Autograd kernel must see the call."""
    return forward_ad._current_level >= 0 or _C._functorch.peek_interpreter_stack() is not None


class OpInfo:
    """Names read from a forward op's and its backward op's schemas."""

    def __init__(self, name: str):
        self.name = name
        fwd = getattr(ops, name).default
        bwd = getattr(ops, f"{name}_backward").default
        self.args = [a.name for a in fwd._schema.arguments]
        self.rets = [r.name for r in fwd._schema.returns]
        self.bargs = [a.name for a in bwd._schema.arguments]
        self.brets = [r.name for r in bwd._schema.returns]
        tensor_args = {a.name for a in fwd._schema.arguments if "Tensor" in str(a.type)}
        # Differentiable inputs: float tensors (batch_sizes holds integers).
        self.prims = [n for n in self.args if n in tensor_args and n != "batch_sizes"]
        # grad_<out> argument -> index of the output it is the gradient of.
        self.grad_of = {
            b: next(i for i, r in enumerate(self.rets) if _norm(r) == _norm(b[5:]))
            for b in self.bargs
            if b.startswith("grad_")
        }
        self.diff_outs = [i for i, r in enumerate(self.rets) if r not in _NON_DIFF]
        self.is_cell = name.endswith("_cell")


# ---- the generic autograd.Function ---------------------------------------------------------
def _fill_defaults(op, args: tuple) -> tuple:
    """The dispatcher drops trailing arguments equal to their defaults; put them back."""
    schema = op._schema.arguments
    if len(args) == len(schema):
        return args
    return (*args, *(a.default_value for a in schema[len(args) :]))


# autograd.Function tracks Tensor arguments and results only, not lists of them (the stack
# ops take and return Tensor[]): lists travel flattened, with their lengths.
def _flatten(values) -> tuple[list, list]:
    flat, lens = [], []
    for v in values:
        if isinstance(v, (list, tuple)):
            flat.extend(v)
            lens.append(len(v))
        else:
            flat.append(v)
            lens.append(None)
    return flat, lens


def _nest(flat, lens) -> list:
    out, i = [], 0
    for n in lens:
        if n is None:
            out.append(flat[i])
            i += 1
        else:
            out.append(list(flat[i : i + n]))
            i += n
    return out


class _Layout:
    """List lengths of one call's arguments (and, once run, of its results)."""

    def __init__(self, arg_lens):
        self.args = arg_lens
        self.outs = None


def _dispatch(name: str, *args):
    """Calls op ``name``: through its autograd.Function inside a torch.func transform (the
    Autograd kernel cannot apply it there), else through the dispatcher."""
    if _C._functorch.peek_interpreter_stack() is not None:
        return apply(name, *args)
    return getattr(ops, name)(*args)


def _select(a, d, i: int):
    if d is None:
        return a
    if isinstance(d, (list, tuple)):
        return [x if di is None else x.select(di, i) for x, di in zip(a, d)]
    return a.select(d, i)


def _draws_masks(name: str, args) -> bool:
    """Whether a call of op ``name`` draws dropout masks (training, p > 0, between layers)."""
    a = dict(zip((x.name for x in getattr(ops, name).default._schema.arguments), args))
    return (
        bool(a.get("train")) and float(a.get("dropout") or 0.0) > 0 and a.get("num_layers", 1) > 1
    )


def _rng_state(device: torch.device):
    """Get and set of the generator the op's dropout masks come from (the device's default)."""
    if device.type == "cuda":
        return (lambda: torch.cuda.get_rng_state(device)), (
            lambda st: torch.cuda.set_rng_state(st, device)
        )
    return torch.get_rng_state, torch.set_rng_state


def loop_vmap(name: str):
    """A vmap rule that runs the op once per batch entry and stacks the results (correct for
    any op, not fast: per-sample gradients and ensembles of small models). Dropout masks
    follow vmap's ``randomness``: "error" (the default) refuses, as torch's random ops do;
    "same" gives every entry the masks of one draw; "different" draws per entry."""

    def rule(info, in_dims, *args):
        restore = None
        if _draws_masks(name, args):
            if info.randomness == "error":
                raise RuntimeError(
                    "vmap: called random operation while in randomness error mode (the dropout "
                    f"between layers of fusedrnn::{name} in training). Please either use the "
                    "'same' or 'different' randomness flags on vmap or perform the randomness "
                    "operation out of vmap"
                )
            if info.randomness == "same":
                get, restore = _rng_state(args[0].device)
                start = get()
        results = []
        for i in range(info.batch_size):
            if restore is not None:
                restore(start)
            out = _dispatch(name, *[_select(a, d, i) for a, d in zip(args, in_dims)])
            results.append(out if isinstance(out, tuple) else (out,))
        stacked, dims = [], []
        for parts in zip(*results):
            if isinstance(parts[0], (list, tuple)):
                stacked.append([torch.stack(list(p), 0) for p in zip(*parts)])
                dims.append([0] * len(stacked[-1]))
            else:
                stacked.append(torch.stack(list(parts), 0))
                dims.append(0)
        if len(stacked) == 1:
            return stacked[0], dims[0]
        return tuple(stacked), tuple(dims)

    return rule


def _function_vmap(name: str):
    """loop_vmap for the autograd.Function, whose arguments and results travel flattened."""
    rule = loop_vmap(name)

    def vmap(info, in_dims, *flat):
        *flat, layout = flat
        out, dims = rule(info, _nest(list(in_dims[:-1]), layout.args), *_nest(flat, layout.args))
        out = out if isinstance(out, tuple) else (out,)
        dims = dims if isinstance(dims, tuple) else (dims,)
        flat_out, layout.outs = _flatten(out)
        flat_dims = _flatten(dims)[0]
        if len(flat_out) == 1:
            return flat_out[0], flat_dims[0]
        return tuple(flat_out), tuple(flat_dims)

    return vmap


def _reference_jvp(arg_names: list[str], ret_names: list[str], run: Callable):
    """jvp through a reference ``run(args dict) -> differentiable results``: inside a
    torch.func transform by torch.func.jvp; inside a torch.autograd.forward_ad dual level
    (where nested forward AD is refused) by reverse mode twice, J v = d/du <J^T u, v>."""

    def jvp(ctx, *tangents):
        flat = ctx.jvp_inputs
        tangents = tangents[: len(flat)]
        live = [
            i
            for i, (x, t) in enumerate(zip(flat, tangents))
            if t is not None and isinstance(x, torch.Tensor)
        ]
        if _C._functorch.peek_interpreter_stack() is not None:
            outs, jv = _func_jvp(ctx, flat, tangents, live)
        else:
            outs, jv = _double_vjp(ctx, flat, tangents, live)
        diff = iter(
            (t if t is not None else torch.zeros_like(o)).detach() for o, t in zip(outs, jv)
        )
        flat_t = []
        for r, n in zip(ret_names, ctx.layout.outs):
            k = 1 if n is None else n
            flat_t += [None] * k if r in _NON_DIFF else [next(diff) for _ in range(k)]
        return tuple(flat_t) if len(flat_t) > 1 else flat_t[0]

    def run_flat(ctx, work):
        a = dict(zip(arg_names, _nest(work, ctx.layout.args)))
        a.update(ctx.jvp_results)  # e.g. the stack ops' dropout masks (in "saved")
        return tuple(_flatten(run(a))[0])

    def _func_jvp(ctx, flat, tangents, live):
        """Inside a torch.func transform: torch.func.jvp of the reference."""

        def f(*prims):
            work = list(flat)
            for i, p in zip(live, prims):
                work[i] = p
            return run_flat(ctx, work)

        return torch.func.jvp(f, tuple(flat[i] for i in live), tuple(tangents[i] for i in live))

    def _double_vjp(ctx, flat, tangents, live):
        with torch.enable_grad():
            work = list(flat)
            for i in live:
                work[i] = flat[i].detach().requires_grad_()
            outs = run_flat(ctx, work)
            on = [k for k, o in enumerate(outs) if o.requires_grad]  # not e.g. an empty c_n
            u = [torch.zeros_like(outs[k], requires_grad=True) for k in on]
            vjp = torch.autograd.grad(
                [outs[k] for k in on], [work[i] for i in live], u, create_graph=True,
                allow_unused=True,
            )  # fmt: skip
            terms = [(g, tangents[i]) for g, i in zip(vjp, live) if g is not None]
            jv = [None] * len(outs)
            if terms:
                jvs = torch.autograd.grad(
                    [g for g, _ in terms], u, [t for _, t in terms], allow_unused=True
                )
                for k, t in zip(on, jvs):
                    jv[k] = t
        return outs, jv

    return jvp


def register(name: str, setup: Callable, backward: Callable, run: Callable) -> None:
    """Registers the Autograd kernel of ``fusedrnn::name`` (see the module docstring).

    ``setup(ctx, inputs, output)`` saves what ``backward(ctx, *grads)`` needs (inputs,
    outputs and gradients nested as in the schema, lists as lists); ``run(args dict)`` is the
    reference of the op's differentiable results (all but workspace and saved), for
    forward-mode AD."""
    op = getattr(ops, name).default
    arg_names = [a.name for a in op._schema.arguments]
    ret_names = [r.name for r in op._schema.returns]

    def forward(*flat):
        *flat, layout = flat
        with _C._AutoDispatchBelowAutograd():
            out = op(*_nest(flat, layout.args))
        out = out if isinstance(out, tuple) else (out,)
        res, layout.outs = _flatten(out)
        return tuple(res) if len(res) > 1 else res[0]

    def setup_context(ctx, inputs, output):
        *flat, layout = inputs
        ctx.layout = layout
        flat_out = output if isinstance(output, tuple) else (output,)
        nested_out = _nest(flat_out, layout.outs)
        if _transforms_active():
            # read by jvp right after forward, never after backward
            ctx.jvp_inputs = flat
            ctx.jvp_results = {r: v for r, v in zip(ret_names, nested_out) if r == "saved"}
        ctx.needs = _nest(ctx.needs_input_grad[:-1], layout.args)
        for r, v in zip(ret_names, nested_out):
            if r in _NON_DIFF:
                ctx.mark_non_differentiable(*(v if isinstance(v, list) else [v]))
        setup(ctx, _nest(flat, layout.args), nested_out)

    def backward_flat(ctx, *grads):
        nested = backward(ctx, *_nest(grads, ctx.layout.outs))
        flat, _ = _flatten(nested)
        return (*flat, None)

    fn = type(
        f"{name}_autograd",
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward_flat),
            "jvp": staticmethod(_reference_jvp(arg_names, ret_names, run)),
            "vmap": staticmethod(_function_vmap(name)),
        },
    )

    # Function.apply binds default arguments through inspect.signature on every call (~40 us
    # of a ~100 us cell training step); outside torch.func the C++ apply it ends in is
    # the same call with the (already complete) arguments.
    base_apply = super(torch.autograd.Function, fn).apply

    def call(args):
        flat, lens = _flatten(args)
        layout = _Layout(lens)
        if _C._are_functorch_transforms_active():
            out = fn.apply(*flat, layout)
        else:
            out = base_apply(*flat, layout)
        out = _nest(out if isinstance(out, tuple) else (out,), layout.outs)
        return tuple(out) if len(out) > 1 else out[0]

    def kernel(keyset, *args):
        args = _fill_defaults(op, args)
        if _C._functorch.peek_interpreter_stack() is not None:
            # autograd.Function must be applied above the dispatcher under torch.func.
            raise RuntimeError(
                f"fusedrnn::{name} was called through torch.ops inside a torch.func transform; "
                "call it through the fusedrnn modules or the fusedrnn.*_layer / *_cell "
                "functions, which support torch.func"
            )
        if (_C.is_grad_enabled() and _C._any_requires_grad(*_flatten(args)[0])) or (
            _transforms_active()
        ):
            return call(args)
        with _C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & _C._after_autograd_keyset, *args)

    lib = _libraries.setdefault("fusedrnn", torch.library.Library("fusedrnn", "IMPL"))
    lib.impl(name, kernel, "Autograd", with_keyset=True)
    torch.library.register_vmap(f"fusedrnn::{name}", loop_vmap(name), lib=lib)
    CALLS[name] = call


_libraries: dict[str, torch.library.Library] = {}
# op name -> a call through its autograd.Function; the Python wrappers use it directly under
# torch.func (autograd.Function must be applied above the dispatcher there).
CALLS: dict[str, Callable] = {}


def apply(name: str, *args):
    """Calls the op ``name`` through autograd (a torch.func transform may be open)."""
    return CALLS[name](_fill_defaults(getattr(ops, name).default, args))


# ---- forward ops: backward is the backward op ------------------------------------------------
def _stack_bias_positions(a: dict) -> set:
    """Positions of the biases in a stack op's flat weight list (torch.nn's order)."""
    if not a["has_biases"]:
        return set()
    n = len(a["weights"])
    per = n // (a["num_layers"] * (2 if a["bidirectional"] else 1))
    return {k for k in range(n) if k % per in (2, 3)}


def _stand_in(w: torch.Tensor) -> torch.Tensor:
    """What the backward op gets for a weight whose values it does not read: a stand-in of
    its shape (no memory), or, when the backward pass is itself recorded (create_graph), the
    weight, kept without save_for_backward (no version check, as torch.nn saves nothing):
    double backward recomputes the forward from it."""
    if torch.is_grad_enabled():
        return w
    return torch.zeros((), dtype=w.dtype, device=w.device).expand(w.shape)


def register_forward(name: str) -> None:
    info = OpInfo(name)
    pos = {n: i for i, n in enumerate(info.args)}
    out_pos = {n: i for i, n in enumerate(info.rets)}
    flags = ("input_grad", "hx_grad")
    saved_names = [n for n in info.bargs if not n.startswith("grad_") and n not in flags]

    def unused(needs, n: str) -> bool:
        """Weights whose values backward does not read (torch.nn does not save them)."""
        if n in ("b_ih", "b_hh"):
            return True  # bias gradients are column sums of the gate gradients
        if n == "w_ih":
            return not needs[pos["input"]]
        if n == "w_hh" and info.is_cell:
            return not needs[pos["hx"]]
        return False

    def setup(ctx, inputs, outs):
        ctx.set_materialize_grads(False)  # the backward ops take None for an unused output
        a = dict(zip(info.args, inputs))
        if a.get("need_workspace") is False and any(ctx.needs_input_grad):
            raise RuntimeError(
                f"fusedrnn::{name} was called with need_workspace=False, but its gradient is "
                "needed: the workspace that backward reads was not written"
            )
        tensors, kept = [], {}  # kept: name -> a plain value, a stand-in, or a list length
        biases = _stack_bias_positions(a) if "weights" in a else set()
        for n in saved_names:
            v = a[n] if n in pos else outs[out_pos[n]]
            if n == "weights":  # a stack's flat weights: its biases as shapes only
                v = [(w if k not in biases else None) for k, w in enumerate(v)]
                ctx.bias_stand_ins = {k: a[n][k] for k in biases}
            if isinstance(v, list):
                tensors.extend(v)
                kept[n] = ("list", len(v))
            elif isinstance(v, torch.Tensor) and unused(ctx.needs, n):
                kept[n] = ("stand-in", v)
            elif isinstance(v, torch.Tensor) or v is None:
                tensors.append(v)
            else:
                kept[n] = ("plain", v)
        ctx.save_for_backward(*tensors)
        ctx.kept = kept

    def backward(ctx, *grads):
        needs = ctx.needs
        saved = iter(ctx.saved_tensors)
        vals = {}
        for n in saved_names:
            kind, v = ctx.kept.get(n, ("tensor", None))
            if kind == "list":
                vals[n] = [next(saved) for _ in range(v)]
                for k, w in getattr(ctx, "bias_stand_ins", {}).items() if n == "weights" else ():
                    vals[n][k] = _stand_in(w)
            elif kind == "stand-in":
                vals[n] = _stand_in(v)
            elif kind == "plain":
                vals[n] = v
            else:
                vals[n] = next(saved)
        bargs = []
        for n in info.bargs:
            if n in info.grad_of:
                bargs.append(grads[info.grad_of[n]])
            elif n in flags:
                bargs.append(needs[pos["input" if n == "input_grad" else "hx"]])
            else:
                bargs.append(vals[n])
        by_name = dict(zip(info.brets, _dispatch(f"{name}_backward", *bargs)))
        result = []
        for n, need in zip(info.args, needs):
            g = by_name.get(f"grad_{n}")
            if isinstance(need, list):
                result.append([x if k else None for x, k in zip(g, need)])
            else:
                result.append(g if need else None)
        return result

    register(name, setup, backward, lambda a: reference_forward(name, a))
