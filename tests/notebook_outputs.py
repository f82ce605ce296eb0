"""Committed notebook outputs that cannot go stale.

``make test`` runs nbval in lax mode, which compares the outputs of the cells tagged
``nbval-check-output`` with what they print now. This pytest plugin (loaded with
``-p notebook_outputs``) makes that comparison tolerant of float noise and nothing else: the
text around the numbers must match exactly, integers must match exactly, and a decimal may
differ by one unit in its last printed digit (``0.598`` against ``0.599``), so a figure that
moves for real still fails. The helpers are also what ``tests/test_notebooks.py`` uses to check
that every number the prose quotes comes from a checked cell.
"""

from __future__ import annotations

import copy
import re

CHECK_TAG = "nbval-check-output"
NUMBER = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _value(token: str) -> float:
    return float(token.replace("−", "-").replace(",", ""))


def _last_digit_unit(token: str) -> float:
    """One unit in the last printed digit: 0.01 for ``1.23``, 1e-5 for ``1.2e-4``."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_agree(reference: str, current: str) -> bool:
    """Whether two printed texts are the same up to one unit in the last digit of each decimal."""
    if NUMBER.split(reference) != NUMBER.split(current):
        return False
    for ref, cur in zip(NUMBER.findall(reference), NUMBER.findall(current)):
        if not any(c in ref + cur for c in ".eE"):
            if ref != cur:
                return False
        elif abs(_value(ref) - _value(cur)) > 1.001 * max(_last_digit_unit(ref), _last_digit_unit(cur)):
            return False
    return True


def _aligned(current, reference):
    """``current`` with each text that agrees with the reference's replaced by the reference's."""
    if current.get("output_type") != reference.get("output_type"):
        return current
    current = copy.deepcopy(current)
    if current.get("output_type") == "stream":
        if current.get("name") == reference.get("name") and numbers_agree(reference.text, current.text):
            current.text = reference.text
    elif "data" in current and "data" in reference:
        for mime, text in current.data.items():
            ref = reference.data.get(mime)
            if mime.startswith("text/") and isinstance(text, str) and isinstance(ref, str) \
                    and numbers_agree(ref, text):  # images are not compared (nbval skips them)
                current.data[mime] = ref
    return current


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("nbval"):
        return
    from nbval.plugin import IPyNbCell

    compare = IPyNbCell.compare_outputs
    if getattr(compare, "tolerates_float_noise", False):
        return

    def compare_outputs(self, test, ref, skip_compare=None):
        test = [_aligned(t, r) for t, r in zip(test, ref)] + list(test[len(ref):])
        return compare(self, test, ref, skip_compare)

    compare_outputs.tolerates_float_noise = True
    IPyNbCell.compare_outputs = compare_outputs
