"""The privacy ledger: every mechanism that touched the sensitive data of one release, in one JSON file.

The reported epsilon comes only from here. The file is append-only (entries are never removed) and
written atomically (temporary file in the same directory + os.replace), so a crash leaves either the
old or the new ledger, never half of one. A DP-SGD run first reserves its planned steps
(`open_dpsgd`, one PLD evaluation against the budget), then charges each noisy step (`charge_step`,
no accounting, just a counter and a write) *before* the step's result is used.

File format = `Ledger.summary()`:
    {"delta", "epsilon_budget", "noise_seed",
     "entries": [{"name", "kind", "noise_multiplier", "sample_rate", "steps", ["planned_steps"]}, ...],
     "epsilon_pld", "epsilon_rdp"}
The two epsilons are derived values: `charge_step` writes them as null (it must stay cheap); `epsilon()`
fills in epsilon_pld and `summary()` both, rewriting the file.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

from privimage.errors import UserError
from privimage.files import write_json_atomic
from privimage.privacy.accountant import check_delta, epsilon_pld, epsilon_rdp
from privimage.privacy.mechanism import Mechanism

__all__ = ["Ledger", "Mechanism", "check_delta", "epsilon_composed"]

RESUMED = "; resumed with "  # joins the noise seeds of a ledger resumed with a different generator


class Ledger:
    """Append-only record of privacy spending at a fixed delta, with an optional epsilon budget.

    >>> ledger = Ledger(tmp / "ledger.json", delta=1e-5, epsilon_budget=10.0)       # doctest: +SKIP
    >>> ledger.charge(Mechanism("semantic_query", "gaussian", noise_multiplier=484.0))  # doctest: +SKIP
    >>> ledger.open_dpsgd("finetune", sample_rate=0.01, noise_multiplier=1.0, planned_steps=500)  # doctest: +SKIP
    >>> ledger.charge_step("finetune")  # once per noisy DP-SGD step                 # doctest: +SKIP
    >>> ledger.epsilon()                                                              # doctest: +SKIP
    """

    def __init__(self, path, *, delta: float, epsilon_budget: float | None = None, noise_seed: str = "os.urandom"):
        check_delta(delta)
        if epsilon_budget is not None and not (math.isfinite(epsilon_budget) and epsilon_budget > 0):
            raise ValueError(f"epsilon_budget must be a finite number > 0 or None, got {epsilon_budget!r}")
        self.path = Path(path)
        self.delta = float(delta)
        self.epsilon_budget = None if epsilon_budget is None else float(epsilon_budget)
        self.noise_seed = noise_seed
        self._entries: list[Mechanism] = []
        self._planned: dict[str, int] = {}  # DP-SGD entry name -> planned (reserved) steps
        self._cache: tuple[tuple, dict] | None = None  # (entries, {"epsilon_pld": x|None, "epsilon_rdp": y|None})
        if self.path.exists():
            self._load()
        self._write()

    def _load(self) -> None:
        """Resume from the file: same delta and budget required, spent steps kept exactly as recorded."""
        try:
            data = json.loads(self.path.read_text())
            entries = [Mechanism(**{f.name: e[f.name] for f in fields(Mechanism)}) for e in data["entries"]]
            planned = {e["name"]: int(e["planned_steps"]) for e in data["entries"] if "planned_steps" in e}
            delta, budget, seed = data["delta"], data["epsilon_budget"], data["noise_seed"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{self.path}: not a readable privimage ledger ({err})") from err
        if delta != self.delta:
            raise UserError(f"{self.path}: ledger was written with delta={delta}, resumed with delta={self.delta}")
        if budget != self.epsilon_budget:
            raise UserError(
                f"{self.path}: ledger was written with epsilon_budget={budget}, resumed with {self.epsilon_budget}"
            )
        self._entries, self._planned = entries, planned
        last_seed = seed.rsplit(RESUMED, 1)[-1]
        self.noise_seed = seed if self.noise_seed == last_seed else f"{seed}{RESUMED}{self.noise_seed}"

    @property
    def entries(self) -> list[Mechanism]:
        """A copy of the entries, in the order they were charged (Mechanism is frozen)."""
        return list(self._entries)

    def has(self, name: str) -> bool:
        return any(m.name == name for m in self._entries)

    def _index(self, name: str) -> int:
        for i, m in enumerate(self._entries):
            if m.name == name:
                return i
        raise UserError(f"{self.path}: no ledger entry named {name!r}")

    def _reserved(self) -> list[Mechanism]:
        """Entries with DP-SGD runs counted at their planned steps: the spending the budget must cover."""
        return [replace(m, steps=max(m.steps, self._planned.get(m.name, 0))) for m in self._entries]

    def _check_budget(self, mechanisms: list[Mechanism], what: str) -> None:
        if self.epsilon_budget is None:
            return
        eps = epsilon_pld(mechanisms, delta=self.delta)
        if eps > self.epsilon_budget:
            raise UserError(
                f"{self.path}: {what} would raise epsilon to {eps:.4g} > budget {self.epsilon_budget:g} "
                f"at delta={self.delta:g}"
            )

    def charge(self, mechanism: Mechanism) -> None:
        """Record a finished release; refuses a duplicate name or one that would exceed the budget."""
        if self.has(mechanism.name):
            raise UserError(f"{self.path}: a mechanism named {mechanism.name!r} is already in the ledger")
        self._check_budget([*self._reserved(), mechanism], f"charging {mechanism.name!r}")
        self._entries.append(mechanism)
        self._write()

    def open_dpsgd(self, name: str, *, sample_rate: float, noise_multiplier: float, planned_steps: int) -> None:
        """Reserve a DP-SGD run: all `planned_steps` must fit the budget; records it with the steps spent so far.

        Resuming (the entry exists): q and sigma must match; the recorded steps are kept, not re-charged.
        """
        if not isinstance(planned_steps, int) or planned_steps < 1:
            raise ValueError(f"planned_steps must be an int >= 1, got {planned_steps!r}")
        entry = Mechanism(name, "poisson_gaussian", noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=0)
        others = self._reserved()
        if self.has(name):
            i = self._index(name)
            old = self._entries[i]
            if replace(old, steps=0) != entry:
                raise UserError(
                    f"{self.path}: entry {name!r} was opened with sample_rate={old.sample_rate}, "
                    f"noise_multiplier={old.noise_multiplier} ({old.kind}); resumed with "
                    f"sample_rate={sample_rate}, noise_multiplier={noise_multiplier}"
                )
            if planned_steps < old.steps:
                raise UserError(
                    f"{self.path}: entry {name!r} already spent {old.steps} steps > planned {planned_steps}"
                )
            entry = old
            del others[i]
        planned = replace(entry, steps=planned_steps)
        self._check_budget([*others, planned], f"{planned_steps} DP-SGD steps of {name!r}")
        if not self.has(name):
            self._entries.append(entry)
        self._planned[name] = planned_steps
        self._write()

    def charge_step(self, name: str, steps: int = 1) -> None:
        """Add `steps` noisy steps to an opened DP-SGD entry and write the file (cheap: no accounting)."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        i = self._index(name)
        if name not in self._planned:
            raise UserError(f"{self.path}: entry {name!r} was not opened with open_dpsgd()")
        total = self._entries[i].steps + steps
        if total > self._planned[name]:
            raise UserError(f"{self.path}: {name!r} would take {total} steps > the {self._planned[name]} planned")
        self._entries[i] = replace(self._entries[i], steps=total)
        self._write()

    def _computed(self, key: str) -> float:
        """epsilon_pld or epsilon_rdp of the entries, cached until they change; refreshes the file."""
        state = tuple(self._entries)
        if self._cache is None or self._cache[0] != state:
            self._cache = (state, {"epsilon_pld": None, "epsilon_rdp": None})
        values = self._cache[1]
        if values[key] is None:
            values[key] = {"epsilon_pld": epsilon_pld, "epsilon_rdp": epsilon_rdp}[key](self._entries, delta=self.delta)
            self._write()
        return values[key]

    def epsilon(self) -> float:
        """Epsilon spent so far (steps actually taken, not planned): PLD composition of all entries at delta."""
        return self._computed("epsilon_pld")

    def summary(self) -> dict:
        """JSON-able state of the ledger with both epsilons (PLD, and RDP as a cross-check); the file format."""
        self._computed("epsilon_pld")
        self._computed("epsilon_rdp")
        return self._state()

    def _state(self) -> dict:
        entries = []
        for m in self._entries:
            entry = asdict(m)
            if m.name in self._planned:
                entry["planned_steps"] = self._planned[m.name]
            entries.append(entry)
        fresh = self._cache is not None and self._cache[0] == tuple(self._entries)
        epsilons = self._cache[1] if fresh else {"epsilon_pld": None, "epsilon_rdp": None}
        return {
            "delta": self.delta,
            "epsilon_budget": self.epsilon_budget,
            "noise_seed": self.noise_seed,
            "entries": entries,
            **epsilons,
        }

    def _write(self) -> None:
        """Atomic replace (temporary file beside the ledger, fsync, rename): a kill never loses an entry."""
        write_json_atomic(self.path, self._state())


def epsilon_composed(ledgers: Sequence[Ledger]) -> float:
    """Epsilon of several releases of the SAME sensitive data together: the PLD composition of the entries
    of all `ledgers` at their common delta (e.g. every method of one run directory, each with its own budget).

    >>> both = epsilon_composed([privimage_ledger, none_ledger])                     # doctest: +SKIP
    >>> both > max(privimage_ledger.epsilon(), none_ledger.epsilon())              # doctest: +SKIP
    True
    """
    deltas = {ledger.delta for ledger in ledgers}
    if len(deltas) != 1:
        raise ValueError(f"ledgers to compose need one common delta, got {sorted(deltas)}")
    return epsilon_pld([m for ledger in ledgers for m in ledger.entries], delta=deltas.pop())
