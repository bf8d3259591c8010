"""Optuna-backed controllers: the study is the controller's state.

By default the study is a SQLite file in the run directory, private to the one
process that holds the run's lock: an interrupted search resumes by reopening it,
and trials a killed process left RUNNING are marked failed at start-up.

With an external storage (``--storage postgresql://...``) several workers share
one study. Each worker records a heartbeat for the trial it is evaluating; a
trial whose worker stopped beating for 3 heartbeats is failed by whichever worker
looks next and re-queued once or twice with the same architecture
(:data:`RETRIES`). :meth:`OptunaController.ask_within` keeps the number of
completed trials, summed over all workers, at exactly the search's budget.

Every trial that counts is a network the study does not hold yet: a proposal
whose canonical architecture (its :attr:`~search_spaces.Arch.id`) is already
complete, running or queued is told PRUNED, marked ``duplicate_of`` that trial,
and the sampler is asked again (a new trial number: a new seed).
:data:`MAX_DUPLICATES` such proposals in a row end the search with
:class:`~nas.controllers.base.SearchSpaceExhausted`.

A study belongs to the controller that made it (study attribute ``controller``):
another controller on the same study is refused (a study made before the
attribute existed is adopted by the first controller that opens it).
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

from nas.controllers.base import Controller, Objectives, SearchSpaceExhausted, register_controller
from nas.controllers.seeding import seed_per_trial
from nas.trials import TrialRow, row_from_study_trial
from search_spaces import Arch, InvalidArchitectureError, SearchSpace
from search_spaces.errors import UserError

RETRIES = 2  # times a trial whose worker died is re-queued with the same architecture
MAX_DUPLICATES = 100  # proposals in a row of networks the study holds before the space counts as exhausted
CONSTRAINTS_ATTR = "constraints"  # study user attribute: the limits its trials were last judged by
CONTROLLER_ATTR = "controller"  # study user attribute: the name of the controller whose study it is
GRACE_HEARTBEATS = 3  # a running trial is stale after this many heartbeat intervals without one
_COUNTED = (
    TrialState.COMPLETE,
    TrialState.RUNNING,
    TrialState.WAITING,
)  # will be (or are) complete unless a worker dies


class StorageError(UserError, ValueError):
    """The search storage cannot be opened (the message names the URL, without its password)."""


class ForeignStudyError(UserError, ValueError):
    """The study holds another controller's search (the message names both and how to start a new study)."""


def study_arch_id(space: SearchSpace, trial: optuna.trial.FrozenTrial) -> str | None:
    """The canonical architecture id a trial holds or will evaluate (a queued trial: its fixed
    parameters), or None when it has none yet."""
    arch_id = trial.user_attrs.get("arch_id")
    if arch_id is not None:
        return arch_id
    fixed = trial.system_attrs.get("fixed_params")
    if not fixed:
        return None
    try:
        return space.arch(fixed).id
    except InvalidArchitectureError:  # partly fixed, or not of this space: no network yet
        return None


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparsable: shown as given, minus anything that looks like a password
        return url.split("@")[-1] if "@" in url else url


def _retryable(exc: Exception) -> bool:
    """Errors of several workers creating the tables of a fresh database at once (not connection errors)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.ProgrammingError)):
        return True
    return isinstance(exc, sa_exc.OperationalError) and "deadlock" in str(exc).lower()


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1 and psycopg2 to older ones: use whichever is
    installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for driver in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://") :]
    return url


def open_storage(url: str, heartbeat_s: float = 10.0) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage shared by several workers: heartbeats, stale trials failed and retried.

    A wrong, unreachable or driverless URL raises :class:`StorageError` with a one-line reason.
    """
    from sqlalchemy import exc as sa_exc

    if heartbeat_s <= 0:
        raise StorageError(f"search.heartbeat_s must be > 0 seconds, got {heartbeat_s}")
    shown = _safe_url(url)
    url = _with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.split(":", 1)[0] in ("postgresql+psycopg2", "postgresql+psycopg"):
        engine_kwargs["connect_args"] = {
            "connect_timeout": 10
        }  # an unreachable host fails in seconds, not minutes
    for attempt in range(6):
        try:
            with (
                warnings.catch_warnings()
            ):  # heartbeat arguments are "experimental" since Optuna 2.9; tested here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,  # type: ignore[arg-type]  (Optuna only compares and adds it)
                    grace_period=GRACE_HEARTBEATS * heartbeat_s,  # type: ignore[arg-type]
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=RETRIES
                    ),
                )
        except ImportError as exc:
            hint = (
                "pip install psycopg2-binary"
                if url.startswith("postgresql")
                else "install the Python driver SQLAlchemy names for this URL"
            )
            raise StorageError(
                f"cannot open search storage {shown}: its database driver is not installed"
                f" ({exc.__cause__ or exc}); {hint}"
            ) from None
        except sa_exc.ArgumentError as exc:
            raise StorageError(
                f"search storage {shown} is not a database URL SQLAlchemy understands ({exc}); e.g."
                " postgresql://user@host/db"
            ) from None
        except sa_exc.SQLAlchemyError as exc:
            if attempt < 5 and _retryable(exc):
                time.sleep(0.2 + 0.3 * attempt)  # another worker is creating the same tables
                continue
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"cannot open search storage {shown}: {reason}") from None
    raise AssertionError("unreachable")


def describe_storage(storage: str | BaseStorage) -> str:
    url = (
        storage
        if isinstance(storage, str)
        else getattr(storage, "url", None) or getattr(getattr(storage, "_backend", None), "url", None)
    )
    return _safe_url(url) if url else type(storage).__name__


class _Heartbeat:
    """Background thread: a heartbeat every ``interval`` seconds for each trial this worker is evaluating."""

    def __init__(self, storage: BaseStorage, interval: float):
        self.storage, self.interval = storage, interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)  # at once: a trial without any heartbeat never goes stale
        with self._lock:
            self._ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nas-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop later heartbeats
                    warnings.warn(
                        f"heartbeat for trial id {trial_id} failed: {exc}", RuntimeWarning, stacklevel=1
                    )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ConstrainedStudy(optuna.Study):
    """A study whose finished trials show the constraints in force *now* to whoever reads them.

    Optuna's constrained samplers (NSGA-II/III, TPE, GP) read each trial's constraint values from its system
    attributes, which Optuna only lets a trial write while it runs. A budget given after the trials were told
    would never reach them, so this study replaces those values on read with ``constraints_of(trial)``
    (name -> violation, <= 0 met), the same function the search front and the export use.
    """

    constraints_of: Callable[[FrozenTrial], Mapping[str, float]] | None = None

    def _get_trials(
        self, deepcopy: bool = True, states: Any = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        judge = self.constraints_of
        if judge is None:
            return trials
        return [self._judged(t, judge, not deepcopy) if t.state == TrialState.COMPLETE else t for t in trials]

    def _judged(
        self, t: FrozenTrial, judge: Callable[[FrozenTrial], Mapping[str, float]], reuse: bool
    ) -> FrozenTrial:
        """``t`` with the constraint values ``judge`` gives it. Samplers read every trial on every ask, so
        without copies (``reuse``) a finished trial is judged once per ``judge``, not once per read (a
        500-trial search read its trials 300,000 times)."""
        memo = self.__dict__.setdefault("_judged_memo", {})
        hit = memo.get(t._trial_id) if reuse else None
        if hit is not None and hit[0] is t and hit[1] is judge:  # the storage's same finished trial
            return hit[2]
        judged = copy.copy(t)
        attrs = {
            k: v
            for k, v in t.system_attrs.items()
            if k != _CONSTRAINTS_KEY and not k.startswith(f"{_CONSTRAINTS_KEY}:")
        }
        attrs.update({f"{_CONSTRAINTS_KEY}:{name}": float(v) for name, v in judge(t).items()})
        judged._system_attrs = attrs
        if reuse:
            memo[t._trial_id] = (t, judge, judged)
        return judged


class OptunaController(Controller):
    """Multi-objective search: maximise accuracy, minimise predicted latency, latency budget as a
    constraint."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        latency_budget_ms: float | None,
        storage: str | BaseStorage,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        n_devices: int = 1,
        name: str | None = None,
    ):
        """``name`` is the controller's registered name, recorded in the study it makes (default: the
        sampler's class name)."""
        super().__init__(space, seed, latency_budget_ms, n_devices)
        self.name = name or type(sampler).__name__
        directions = ["maximize"] + ["minimize"] * n_devices  # accuracy, then latency on each device
        created = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=directions,
            sampler=sampler,
            load_if_exists=True,
        )
        self.study = ConstrainedStudy(
            study_name=created.study_name, storage=created._storage, sampler=sampler
        )
        self.set_constraints(self._budget_only)
        owner = self.study.user_attrs.get(CONTROLLER_ATTR)
        if owner is not None and owner != self.name:
            raise ForeignStudyError(foreign_study_message(owner, self.name, study_name, storage))
        if len(self.study.directions) != len(directions):
            raise ForeignStudyError(
                f"study {study_name!r} in {describe_storage(storage)} optimises"
                f" {len(self.study.directions) - 1} latency objective(s), this search {n_devices}:"
                " search.devices changed; use a new --run-dir (or the old devices)"
            )
        if owner is None:  # a new study, or one made before studies recorded their controller: ours now
            self.study.set_user_attr(CONTROLLER_ATTR, self.name)
            owner = self.study.user_attrs.get(CONTROLLER_ATTR)  # another worker may have claimed it at once
            if owner != self.name:
                raise ForeignStudyError(foreign_study_message(owner, self.name, study_name, storage))
        # name the objectives for optuna-dashboard and Optuna's plots (a study made before this: named now)
        if self.study.metric_names is None:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(objective_names(n_devices))
        # A storage with heartbeats is shared by several workers: a RUNNING trial may be another worker's.
        self.shared = is_heartbeat_enabled(self.study._storage)
        self._heartbeat: _Heartbeat | None = None
        if self.shared:
            self._heartbeat = _Heartbeat(
                self.study._storage, float(self.study._storage.get_heartbeat_interval())
            )  # type: ignore[attr-defined]
            # workers built with one seed must not propose the same architectures
            self.study.sampler.reseed_rng()
        else:
            self._fail_stale_trials()
        self._pending: dict[str, list[optuna.trial.Trial]] = {}

    def _fail_stale_trials(self) -> None:
        """Private storage only: no other process can be running these trials."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    def fail_stale_trials(self) -> None:
        """Shared storage: fail (and re-queue) trials whose worker stopped beating."""
        if self.shared:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def _new_trial(self) -> optuna.trial.Trial:
        with (
            warnings.catch_warnings()
        ):  # "heartbeat is supposed to be used with Study.optimize": ours beats for ask/tell
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask()
        if self._heartbeat is not None:
            self._heartbeat.add(trial._trial_id)
        return trial

    def _suggest(self, trial: optuna.trial.Trial) -> Arch | None:
        """The trial's architecture, or None (the trial told PRUNED) when the study already holds that
        network."""
        arch = self.space.arch(
            {k: trial.suggest_categorical(k, list(v)) for k, v in self.space.choices.items()}
        )
        twin = self._holder_of(arch, trial.number)
        if twin is not None:  # not a new network: this trial does not count, the caller asks again
            trial.set_user_attr("duplicate_of", twin)
            trial.set_user_attr("arch_id", arch.id)
            self._finish(trial, state=TrialState.PRUNED)
            return None
        trial.set_user_attr("arch_id", arch.id)
        trial.set_user_attr("arch", arch.to_json())
        if self.shared:
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who evaluated it
        self._pending.setdefault(arch.id, []).append(trial)
        return arch

    def _holder_of(self, arch: Arch, number: int) -> int | None:
        """The trial that already holds ``arch``'s network: complete, or running or queued before trial
        ``number`` (a later one of a racing worker yields to this one)."""
        holders = [
            t.number
            for t in self.study.get_trials(deepcopy=False, states=_COUNTED)
            if t.number != number
            and (t.state == TrialState.COMPLETE or t.number < number)
            and study_arch_id(self.space, t) == arch.id
        ]
        return min(holders, default=None)

    def _check_not_exhausted(self, duplicates: int) -> None:
        """After ``duplicates`` proposals in a row of networks the study holds: raise
        :class:`SearchSpaceExhausted` when every network of the space is in the study, or after
        :data:`MAX_DUPLICATES`."""
        if not duplicates:
            return
        trials = self.study.get_trials(deepcopy=False, states=_COUNTED)
        held = {study_arch_id(self.space, t) for t in trials} - {None}
        total = self.space.num_architectures()
        if len(held) < total and duplicates < MAX_DUPLICATES:
            return
        evaluated = len(
            {t.user_attrs.get("arch_id") for t in trials if t.state == TrialState.COMPLETE} - {None}
        )
        why = (
            f"all {total} networks of the space are evaluated or being evaluated"
            if len(held) >= total
            else f"its last {duplicates} proposals were networks already evaluated or being evaluated"
        )
        raise SearchSpaceExhausted(
            f"search space {self.space.name!r} looks exhausted for controller {self.name!r}: {why}"
            f" ({evaluated} distinct networks evaluated, of {total} in the space); the search ends with the"
            " trials it has:"
            " ask for fewer --trials, or search a larger space (--space, --space.*) in a new --run-dir"
        )

    def ask(self, n: int = 1) -> list[Arch]:
        """``n`` networks the study does not hold yet (see :meth:`ask_within` for duplicates and
        exhaustion)."""
        self.fail_stale_trials()
        out: list[Arch] = []
        duplicates = 0
        while len(out) < n:
            self._check_not_exhausted(duplicates)
            arch = self._suggest(self._new_trial())
            if arch is None:
                duplicates += 1
            else:
                out.append(arch)
                duplicates = 0
        return out

    def counts(self) -> dict[TrialState, int]:
        out = dict.fromkeys(TrialState, 0)
        for t in self.study.get_trials(deepcopy=False):
            out[t.state] += 1
        return out

    def ask_within(self, trials: int, poll_s: float = 0.5) -> Arch | None:
        """The next architecture to evaluate, or None once the study holds ``trials`` complete trials.

        The budget is the study's, over every worker sharing it. A trial asked when
        ``trials`` trials with smaller numbers are already complete, running or
        queued is surplus: it is told PRUNED without being evaluated. Trial numbers
        are allotted one at a time by the storage, so racing workers never complete
        more than ``trials``. While the rest of the budget is running elsewhere this
        waits: one of those trials may still fail (its worker killed) and be re-queued.

        A proposal of a network the study already holds (complete, running or queued:
        same canonical architecture id) does not count either: it is told PRUNED with
        user attribute ``duplicate_of`` (that trial's number) and the sampler asked
        again. After :data:`MAX_DUPLICATES` of them in a row, or once every network
        of the space is held, this raises :class:`SearchSpaceExhausted`.
        """
        duplicates = 0
        while True:
            self.fail_stale_trials()
            n = self.counts()
            if n[TrialState.COMPLETE] >= trials:
                return None
            if self.shared and n[TrialState.COMPLETE] + n[TrialState.RUNNING] >= trials:
                time.sleep(poll_s)
                continue
            self._check_not_exhausted(duplicates)
            trial = self._new_trial()
            ahead = sum(
                1 for t in self.study.get_trials(deepcopy=False, states=_COUNTED) if t.number < trial.number
            )
            if ahead >= trials:
                self._finish(trial, state=TrialState.PRUNED)
                continue
            arch = self._suggest(trial)
            if arch is not None:
                return arch
            duplicates += 1

    def _finish(
        self,
        trial: optuna.trial.Trial,
        values: Sequence[float] | None = None,
        state: TrialState | None = None,
    ) -> None:
        try:
            self.study.tell(trial, values, state=state)
        finally:
            if self._heartbeat is not None:
                self._heartbeat.remove(trial._trial_id)

    def enqueue(self, arch: Arch) -> None:
        self.study.enqueue_trial({k: arch[k] for k in self.space.keys}, skip_if_exists=True)

    def tell(self, archs: Sequence[Arch], results: Sequence[Objectives]) -> None:
        for arch, res in zip(archs, results, strict=True):
            queue = self._pending.get(arch.id)
            if not queue:
                raise KeyError(
                    f"architecture {arch.id} was not asked by this controller (or was already told)"
                )
            trial = queue.pop(0)
            trial.set_user_attr("latency_ms", res.latency_ms)
            for key, value in res.network.items():  # what the network is, for constraints judged on read
                trial.set_user_attr(key, float(value))
            if res.accuracy is None:
                self._finish(trial, state=TrialState.FAIL)
            else:
                trial.set_user_attr("accuracy", res.accuracy)
                if len(res.extra_latencies_ms) != self.n_devices - 1:
                    raise ValueError(
                        f"expected latencies on {self.n_devices} devices, got"
                        f" {1 + len(res.extra_latencies_ms)}"
                    )
                self._finish(trial, [res.accuracy, res.latency_ms, *res.extra_latencies_ms])

    def close(self) -> None:
        """Stop the heartbeat thread (trials still asked and not told then go stale and are retried
        elsewhere)."""
        if self._heartbeat is not None:
            self._heartbeat.close()

    def n_finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def history(self) -> list[TrialRow]:
        """Finished trials, ``feasible`` judged by the constraints in force (:meth:`set_constraints`)."""
        rows = [
            row_from_study_trial(t)
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
        for r in rows:
            r["feasible"] = all(v <= 0 for v in self._constraints(r).values())
        return rows

    def _budget_only(self, row: TrialRow) -> dict[str, float]:
        """The constraints a controller knows by itself: its latency budget (relative excess)."""
        budget = self.latency_budget_ms
        return {} if budget is None else {"latency_ms": (row["latency_ms"] - budget) / budget}

    def set_constraints(self, constraints: Callable[[TrialRow], Mapping[str, float]]) -> None:
        super().set_constraints(constraints)
        self.study.constraints_of = lambda t: constraints(row_from_study_trial(t))

    def recorded_constraints(self) -> dict[str, Any] | None:
        return self.study.user_attrs.get(CONSTRAINTS_ATTR)

    def record_constraints(self, limits: Mapping[str, Any]) -> None:
        if self.study.user_attrs.get(CONSTRAINTS_ATTR) != dict(limits):
            self.study.set_user_attr(CONSTRAINTS_ATTR, dict(limits))


def objective_names(n_devices: int) -> list[str]:
    """The study's objectives: ``accuracy``, ``latency_ms`` (the first of ``search.devices``), then
    ``latency_ms_2``, ``latency_ms_3``, ... for the further devices, in that order."""
    return ["accuracy", "latency_ms", *(f"latency_ms_{i}" for i in range(2, n_devices + 1))]


def foreign_study_message(owner: Any, name: str, study_name: str, storage: str | BaseStorage) -> str:
    """Why controller ``name`` may not continue a study that controller ``owner`` made (one line)."""
    return (
        f"study {study_name!r} in {describe_storage(storage)} holds a search by controller {owner!r}, not"
        f" {name!r}: continue it with --controller={owner}, or start a new study for {name!r} with a new"
        " --run-dir (or --search.study=NAME for another study in the same storage)"
    )


def refuse_foreign_study(
    name: str,
    run_dir: Any,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    n_devices: int | None = None,
) -> None:
    """Raise the :class:`ForeignStudyError` controller ``name`` would raise on this study, creating and
    changing nothing.

    For checks made before a command writes anything: a study that does not exist
    yet (no private ``study.db``, or no study of that name) or that records no
    controller is anyone's.
    """
    if storage is None and not (Path(run_dir) / "study.db").exists():
        return
    where, study_name = _storage_and_name(run_dir, storage, study_name)
    opened = optuna.storages.get_storage(where) if isinstance(where, str) else where
    try:
        study_id = opened.get_study_id_from_name(study_name)
    except KeyError:  # no such study in this storage
        return
    owner = opened.get_study_user_attrs(study_id).get(CONTROLLER_ATTR)
    if owner is not None and owner != name:
        raise ForeignStudyError(foreign_study_message(owner, name, study_name, where))
    objectives = len(opened.get_study_directions(study_id))
    if n_devices is not None and objectives != 1 + n_devices:
        raise ForeignStudyError(
            f"study {study_name!r} in {describe_storage(where)} optimises {objectives - 1} latency"
            f" objective(s), this search {n_devices}: search.devices changed; use a new --run-dir (or the old"
            " devices)"
        )


def _storage_and_name(
    run_dir: Any, storage: str | BaseStorage | None, study_name: str | None
) -> tuple[str | BaseStorage, str]:
    """No storage: the run directory's private SQLite file; a URL: a shared storage (see
    :func:`open_storage`)."""
    if storage is None:
        return f"sqlite:///{run_dir}/study.db", study_name or "search"
    return (open_storage(storage) if isinstance(storage, str) else storage), study_name or "search"


@register_controller("nsga2")
def nsga2(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Optuna NSGA-II over (accuracy, latency on each device), constrained by the latency budget."""
    sampler = seed_per_trial(optuna.samplers.NSGAIISampler(population_size=population, seed=seed), seed)
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="nsga2",
    )


@register_controller("random")
def random_search(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Uniform random search (the baseline every other controller must beat)."""
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=seed_per_trial(optuna.samplers.RandomSampler(seed=seed), seed),
        n_devices=n_devices,
        name="random",
    )


@register_controller("tpe")
def tpe(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Optuna multivariate TPE (multi-objective), ``population`` random start-up trials, budget as a
    constraint."""
    sampler = seed_per_trial(
        optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population), seed
    )
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="tpe",
    )


@register_controller("nsga3")
def nsga3(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Optuna NSGA-III (reference-point selection: better spread with three or more objectives, e.g. several
    devices)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the behaviour is what we test
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = seed_per_trial(optuna.samplers.NSGAIIISampler(population_size=population, seed=seed), seed)
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="nsga3",
    )


@register_controller("gp")
def gp(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Optuna Gaussian-process Bayesian optimisation (small evaluation budgets; its cost grows with the
    trials)."""
    sampler = seed_per_trial(
        optuna.samplers.GPSampler(seed=seed, n_startup_trials=population, warn_independent_sampling=False),
        seed,
    )
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="gp",
    )
