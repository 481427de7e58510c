"""The child process of `grader.run_file_check`: import a learner's file, grade it, report each step.

Run as `python -m minilora.exercises._worker NAME PATH`. Messages are JSON lines on the process's
original stdout: {"event": "import"}, then {"event": "case", "label", "inputs"} before each call of
the learner's function, then {"event": "verdict", "passed", "message"}. The learner's own prints go
to stderr, so they cannot be mistaken for messages.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    """Grade function argv[0] of file argv[1]; report on stdout (see the module docstring); exit 0."""
    name, path = argv
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)                      # fd 1 (print) now goes to stderr

    def send(**msg) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    from . import EXERCISES
    from .grader import describe_inputs, load_function, run_check

    send(event="import")
    func, why = load_function(name, path)
    if func is None:
        send(event="verdict", passed=False, message=why)
    else:
        result = run_check(EXERCISES[name], func,
                           on_case=lambda label, inputs: send(event="case", label=label,
                                                              inputs=describe_inputs(inputs)))
        send(event="verdict", passed=result.passed, message=result.message)
    channel.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)                        # do not wait for threads the learner's code may have left running


if __name__ == "__main__":
    main(sys.argv[1:])
