"""Runs a TaskSpec's steps in one browser context. No NATS in here.

Secret references stay templates in the spec; a value is substituted only in the argument of the
Playwright call that needs it, and every value is masked out of what the runner returns.

runner.py holds the loop (retries, timeout, masking, failure artifacts); the actions live by concern:
interaction.py (navigate, click, fill, wait for, assert...), extraction.py (extract, evaluate), capture.py
(screenshot, pdf, download), control.py (if, repeat); outcome.py is what a run returns.
"""

from .outcome import Artifact, StepError, StepsOutcome, schema_errors
from .runner import StepsRunner

__all__ = ["Artifact", "StepError", "StepsOutcome", "StepsRunner", "schema_errors"]
