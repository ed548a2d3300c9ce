"""A real processor worker with a test-only fault, started by ``test_poison_records``.

It is the normal worker (``processors.<name>.main``) except that the core call of its agent
misbehaves on marked input, as a pathological record would:

- evaluator: a request whose resource ends in ``:hang`` blocks the worker (its event loop
  included) for an hour; one ending in ``:raise`` raises.
- command processor: an ``IssueGrant`` to a principal ending in ``-hang`` / ``-raise`` likewise.

Which processor it is comes from the ready file ``ledger.stack`` gives it. Nothing of this is in
the product: the test points ``ledger.stack.PROCESSORS`` at this module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ledger.core import answering
from processors import command_handler, command_processor, evaluator


def _misbehave(marker: str) -> None:
    if marker.endswith("hang"):
        time.sleep(3600)
    if marker.endswith("raise"):
        raise RuntimeError(f"test fault on {marker}")


def main() -> None:
    name = Path(os.environ["LEDGER_READY_FILE"]).stem
    if name.startswith("evaluator"):
        real_evaluate = answering.evaluate

        def evaluate(state: Any, request: Any, **kw: Any) -> Any:
            _misbehave(request.resource)
            return real_evaluate(state, request, **kw)

        answering.evaluate = evaluate  # type: ignore[assignment]
        evaluator.main()
    else:
        real_decide = command_handler.decide_signed

        def decide(state: Any, command: Any, **kw: Any) -> Any:
            _misbehave(str(getattr(command, "principal", "")))
            return real_decide(state, command, **kw)

        command_handler.decide_signed = decide  # type: ignore[assignment]
        command_processor.main()


if __name__ == "__main__":
    main()
