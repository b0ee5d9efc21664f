"""What the PLM-VideoBench prompts share; each task's own prompt lives in its module (``tasks/fgqa.py``, ...).

The prompts match the benchmark's strings character for character.

The strings follow lmms-eval (EvolvingLMMs-Lab/lmms-eval, ``lmms_eval/tasks/plm_videobench/``):

- FGQA: ``fgqa/fgqa_test.yaml`` (``prompt: "{question}{answer}"``) and ``fgqa/fgqa_utils.py``
  (``qa_template`` builds the question block, ``plm_fgqa_doc_to_text`` fills the yaml template).
- SGQA: ``sgqa/sgqa_test.yaml`` and ``sgqa/sgqa_utils.py`` (``plm_sgqa_doc_to_text``).
- RCap: ``rcap/rcap_test.yaml`` and ``rcap/rcap_utils.py`` (``plm_rcap_doc_to_text``).
- RTLoc: ``rtloc/rtloc_test.yaml`` and ``rtloc/rtloc_utils.py`` (``plm_rtloc_doc_to_text``).
- RDCap: ``rdcap/rdcap_test.yaml`` and ``rdcap/rdcap_utils.py`` (``plm_rdcap_doc_to_text``).

``max_new_tokens`` comes from each yaml's ``generation_kwargs``; decoding there is greedy
(``temperature: 0``), and lmms-eval's PLM wrapper (``lmms_eval/models/simple/plm.py``) strips one
trailing "." from every generation before scoring.
"""

from __future__ import annotations

NUM_VIDEO_FRAMES = 32
"""Frames PLM-VideoBench feeds the model (``num_video_frames`` in ``_default_template_yaml``)."""

# The "{answer}" slip. The FGQA and SGQA yaml templates end in "{answer}", and the utils fill that
# placeholder with the literal text "{answer}" (``.format(..., answer="{answer}")``), so every
# benchmark prompt the model saw ends in the eight characters "{answer}" right after the question
# ("...Only give the best option.{answer}"). Decision: reproduce it by default, because these
# builders exist to reproduce the benchmark's inputs and scores exactly; callers that use the
# prompts outside the benchmark (indexing, demos) can pass ``answer_slip=False`` to drop it.
ANSWER_SLIP = "{answer}"

def option_letter(index: int) -> str:
    """The letter of option ``index``: 0 -> "A", 1 -> "B", ..."""
    if not 0 <= index < 26:
        raise ValueError(f"option index {index} is outside A..Z")
    return chr(ord("A") + index)


def benchmark_frame_index(frame: int, total_frames: int, num_frames: int = NUM_VIDEO_FRAMES) -> int:
    """Map an original-video frame number into the ``num_frames`` index space as lmms-eval does.

    lmms-eval computes ``int(frame / (total_frames / num_frames))``: a truncation, not a rounding.
    It is used for RCap's prompt frames and for the RTLoc and RDCap ground truth.
    """
    if total_frames <= 0:
        raise ValueError("total_frames must be positive")
    return int(frame / (total_frames / num_frames))
