"""Models declared in ``budgets.toml`` with ``factory = "..."``: one pytest item each, no Python
test to write. Their node ids are ``budgets.toml::NAME``, so ``-k NAME`` selects one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..budgets.schema import Entry
from ..errors import BudgetExceeded, ModelBudgetError
from ..factories import FactoryError, load_callable
from ..options import resolve
from .session import SESSION_KEY

if TYPE_CHECKING:
    from .session import BudgetSession


class BudgetsFile(pytest.File):
    def collect(self) -> Any:
        session: BudgetSession = self.config.stash[SESSION_KEY]
        for name, entry in session.file.budgets.items():
            if entry.factory is not None:
                yield DeclaredModel.from_parent(self, name=name, entry=entry)


class DeclaredModel(pytest.Item):
    def __init__(self, *, entry: Entry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        # As in-code budget tests carry it: -m "not budget" deselects declared models too.
        self.add_marker(pytest.mark.budget)

    def runtest(self) -> None:
        __tracebackhide__ = True
        session: BudgetSession = self.config.stash[SESSION_KEY]
        import torch

        from .scheduling import share_cores

        share_cores()

        from ..engine import build, measure

        entry = self.entry

        def where(*key: str) -> str:  # read the file only on the error path
            return session.line_of(self.name, *key)

        def named(key: str) -> Any:
            """The callable that ``budgets.NAME.KEY`` names, or None; a name that does not
            import is an error naming the key and its line."""
            path = getattr(entry, key)
            try:
                return load_callable(path) if path else None
            except FactoryError as exc:
                raise DeclaredModelError(f"{where(key)}: budgets.{self.name}.{key}: {exc}") from None

        inputs_factory = named("inputs")
        inputs = inputs_factory() if inputs_factory else None
        dtype = None
        if entry.dtype is not None:
            dtype = getattr(torch, entry.dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise DeclaredModelError(
                    f"{where('dtype')}: budgets.{self.name}.dtype: {entry.dtype!r} is not a torch dtype"
                )
        loss_fn, optimizer_class, optimizer = named("loss"), named("optimizer"), None
        if optimizer_class is not None:
            optimizer_kwargs = dict(entry.optimizer_kwargs)

            def optimizer(params: list[Any]) -> Any:
                return optimizer_class(params, **optimizer_kwargs)

        try:
            built = build(entry.factory or "", entry.factory_kwargs, meta=entry.meta, base=session.path.parent)
        except FactoryError as exc:
            raise DeclaredModelError(f"{where('factory')}: budgets.{self.name}.factory: {exc}") from None
        except Exception as exc:
            raise DeclaredModelError(
                f"{where()}: budgets.{self.name}: factory {entry.factory}(**{entry.factory_kwargs!r}) raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        model = built.model
        chosen = resolve({"entry": entry.options(), "settings": session.file.settings.options()})
        if inputs is None and entry.input_size is None and chosen["mode"] not in ("prefill", "decode"):
            inputs = built.inputs  # a serving step makes its own from batch and context
        try:
            stats = measure(
                model,
                inputs,
                input_size=entry.input_size,
                dtype=dtype,
                forward_kwargs=dict(entry.forward_kwargs) or None,
                mode=chosen["mode"],
                loss_fn=loss_fn,
                optimizer=optimizer,
                device=chosen["device"],
                autocast=getattr(torch, chosen["autocast"]) if chosen["autocast"] else None,
                outputs=chosen["outputs"],
                parallel=chosen["parallel"],
                gpu=session.file.settings.gpu_named(chosen["gpu"]),
                step=chosen["step"],
                accumulation_steps=chosen["accumulation_steps"],
                set_to_none=chosen["set_to_none"],
                execution=chosen["execution"],
                context=chosen["context"],
                batch=chosen["batch"],
            )
        except ModelBudgetError as exc:
            # The message says where the model's code raised: no chain of our frames under it.
            raise DeclaredModelError(f"{where()}: budgets.{self.name}: {exc}") from None
        session.check(self, stats, name=self.name, marker=None)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (BudgetExceeded, DeclaredModelError)):
            # The message alone (no traceback into the plugin), as pytest.fail(pytrace=False)
            # shows one; a plain string would be repeated whole in the short summary on CI.
            return self._repr_failure_py(excinfo, style="value")
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"budget {self.name}"


class DeclaredModelError(Exception):
    """A declared model that could not be built or measured; the message names the entry."""
