"""The documented import path of generation: ``from rpt_train.generate import SamplingParams, generate``.

Generation lives in ``rpt_core.model.generation`` (both packages use it); this module re-exports it.
"""

from rpt_core.model.generation import Generation, SamplingParams, generate

__all__ = ["Generation", "SamplingParams", "generate"]
