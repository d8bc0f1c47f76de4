"""Would one CUDA graph of this step replay it correctly? Checked on any device, a CPU included.

A CUDA graph records the kernels of one call of a step and replays exactly those kernels on
exactly those memory addresses with exactly those arguments. What it refuses (a capture fails)
or silently gets wrong (the replay repeats the captured step's numbers):

- `host sync`: the host reads a device value (`.item()`, `bool(t)`, `.tolist()`, or an
  operator whose output size depends on the data: `nonzero`, boolean indexing, `bincount`,
  `unique`, `masked_select`, `repeat_interleave`);
- `host data`: a tensor made from host data inside the step (`torch.tensor([...])`), or moved
  between devices inside it (`.to(device)`, `.cpu()`, `.cuda()`);
- `foreign generator`: a random draw from a generator that is neither the trial's own nor the
  global one (a CPU generator feeding a GPU step repeats its numbers on every replay);
- `another device`: a tensor of another device, or one made without naming the trial's device
  (on a CUDA machine it would land on the CPU): inside the check the default device is `meta`,
  so such a tensor shows up as one;
- `cast cache`: autocast with its cast cache on (the casts made while capturing would outlive
  the capture);
- `changed between steps`: consecutive steps that do not issue the same operators, with the same
  shapes, strides, numbers and outside storages (inputs, parameters, optimizer state, counters,
  accumulators): a graph of the first would not be the second (a batch sliced by a Python step
  number, a tensor made afresh outside each step, a lazily allocated state).

`CaptureCheck(device, generators)` is used as `with check.step(): run.step()` for a few
consecutive steps; each fault raises `CaptureUnsafe` naming its kind and the operator. Intermediate
tensors of a step (gradients included: the optimizer sets them to None and backward writes them
anew, which a graph's private pool gives the same addresses on every replay) are told apart from
outside storages by being made inside the step.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Operators that make the host wait for the device: a scalar read, or an output whose size
# depends on the values.
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "nonzero_numpy", "argwhere",
            "masked_select", "bincount", "histc", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive",
            "repeat_interleave", "_assert_async"}
HOST_DATA_OPS = {"lift_fresh", "lift_fresh_copy", "_to_copy"}
# Tensor methods that read device values on the host or move tensors between devices.
SYNC_METHODS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__complex__"}
MOVE_METHODS = {"cpu", "cuda", "to"}
HOST_DATA_FUNCTIONS = {"tensor", "as_tensor", "asarray", "from_numpy", "frombuffer"}


class CaptureUnsafe(RuntimeError):
    """A step that one CUDA graph would not replay correctly."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)


class _Methods(TorchFunctionMode):
    """Python-level calls: tensor methods that never reach an operator on a CPU (`.tolist()`,
    `.cpu()`), tensors made from host data, and autocast's state (which operators no longer see)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if torch.is_autocast_enabled(self.device.type) and torch.is_autocast_cache_enabled():
            raise CaptureUnsafe("cast cache", "autocast caches its casts; a graph needs cache_enabled=False")
        if name in SYNC_METHODS:
            raise CaptureUnsafe("host sync", f"Tensor.{name}()")
        if name in HOST_DATA_FUNCTIONS:
            raise CaptureUnsafe("host data", f"torch.{name}() makes a tensor from host data inside the step")
        if name in MOVE_METHODS and (name != "to" or _moves(args[1:], kwargs)):
            raise CaptureUnsafe("host data", f"Tensor.{name}() moves a tensor between devices inside the step")
        return func(*args, **kwargs)


def _moves(args, kwargs) -> bool:
    """Whether `Tensor.to(*args, **kwargs)` names a device (a dtype alone is a cast on the device)."""
    if "device" in kwargs:
        return True
    return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args)


class _Operators(TorchDispatchMode):
    """Every operator the step runs, forward, backward and update alike."""

    def __init__(self, check: "CaptureCheck"):
        super().__init__()
        self.check = check

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.check._before(func, args, kwargs)
        out = func(*args, **kwargs)
        self.check._after(func, args, kwargs, out)
        return out


class CaptureCheck:
    """Checks steps of one trial on `device`; `generators` are the trial's own (the global one
    is always allowed: a graph registers it)."""

    def __init__(self, device: torch.device | str, generators=()):
        self.device = torch.device(device)
        self.generators = {g._cdata for g in generators}
        self.traces: list[list[tuple]] = []

    @contextlib.contextmanager
    def step(self):
        """One step under the check; after the second, each step is compared with the one before."""
        self._trace: list[tuple] = []
        self._made: dict[int, int] = {}  # storage -> the order of its (latest) creation in this step
        self._created = 0
        with torch.device("meta"), _Methods(self.device), _Operators(self):
            yield
        self.traces.append(self._trace)
        if len(self.traces) >= 2:
            self._compare(self.traces[-2], self.traces[-1])

    def _name(self, t: torch.Tensor) -> str:
        s = _storage(t)
        return f"made#{self._made[s]}" if s in self._made else f"outside@{s:x}"

    def _describe(self, x) -> object:
        if isinstance(x, torch.Tensor):
            return ("T", self._name(x), tuple(x.shape), tuple(x.stride()), x.storage_offset(), str(x.dtype))
        if isinstance(x, torch.Generator):
            return ("G", x._cdata)
        return repr(x)

    def _before(self, func, args, kwargs) -> None:
        name = func._schema.name.split("::")[-1]
        if name in SYNC_OPS:
            raise CaptureUnsafe("host sync", f"{func} waits for the device")
        if name in HOST_DATA_OPS and (name != "_to_copy" or not _same_device(
                torch.device(kwargs.get("device") or args[0].device), args[0].device)):
            raise CaptureUnsafe("host data", f"{func} makes a tensor from host data or another device inside the step")
        if name in ("index", "index_put", "index_put_", "_index_put_impl_") and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in tree_flatten(args[1])[0]):
            raise CaptureUnsafe("host sync", f"{func} with a boolean mask (its output size depends on the data)")
        generator = kwargs.get("generator")
        if generator is not None and generator._cdata not in self.generators:
            raise CaptureUnsafe("foreign generator", f"{func} draws from a generator that is not the trial's")
        for x in tree_flatten((args, kwargs))[0]:
            if isinstance(x, torch.Tensor) and not _same_device(x.device, self.device):
                raise CaptureUnsafe("another device", f"{func} gets a tensor on {x.device}, the trial trains on {self.device}")
        device = kwargs.get("device")
        if device is not None and not _same_device(torch.device(device), self.device):
            raise CaptureUnsafe("another device", f"{func} makes a tensor on {device} (no device named?), "
                                                  f"the trial trains on {self.device}")
        self._trace.append((str(func), tuple(self._describe(x) for x in tree_flatten((args, kwargs))[0])))

    def _after(self, func, args, kwargs, out) -> None:
        inputs = {_storage(x) for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)}
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor):
                if not _same_device(x.device, self.device):
                    raise CaptureUnsafe("another device", f"{func} made a tensor on {x.device}")
                s = _storage(x)
                if s not in inputs:
                    self._made[s] = self._created
                    self._created += 1

    @staticmethod
    def _compare(before: list[tuple], after: list[tuple]) -> None:
        for i, (a, b) in enumerate(zip(before, after)):
            if a != b:
                diff = next((f"argument {j}: {x} then {y}" for j, (x, y) in enumerate(zip(a[1], b[1])) if x != y),
                            f"{a[0]} then {b[0]}")
                raise CaptureUnsafe("changed between steps", f"operator {i} ({a[0]}), {diff}")
        if len(before) != len(after):
            raise CaptureUnsafe("changed between steps", f"{len(before)} operators, then {len(after)}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
