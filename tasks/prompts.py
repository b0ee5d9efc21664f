"""PLM-VideoBench task prompts, built to match the benchmark's strings character for character.

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

from collections.abc import Sequence

NUM_VIDEO_FRAMES = 32
"""Frames PLM-VideoBench feeds the model (``num_video_frames`` in ``_default_template_yaml``)."""

MAX_NEW_TOKENS: dict[str, int] = {
    "fgqa": 16,
    "sgqa": 16,  # sgqa_test.yaml really sets 16, although the prompt asks for 20-30 words
    "rcap": 512,
    "rtloc": 16,
    "rdcap": 512,
}
"""Generation budget per task, as each lmms-eval ``*_test.yaml`` sets it."""

# The "{answer}" slip. The FGQA and SGQA yaml templates end in "{answer}", and the utils fill that
# placeholder with the literal text "{answer}" (``.format(..., answer="{answer}")``), so every
# benchmark prompt the model saw ends in the eight characters "{answer}" right after the question
# ("...Only give the best option.{answer}"). Decision: reproduce it by default, because these
# builders exist to reproduce the benchmark's inputs and scores exactly; callers that use the
# prompts outside the benchmark (indexing, demos) can pass ``answer_slip=False`` to drop it.
ANSWER_SLIP = "{answer}"

_FGQA_INSTRUCTION = "\nOnly give the best option."

_SGQA_PROMPT = (
    "The following question is asked by the camera wearer at the end of the video.  "
    "Provide a detailed answer even if unsure.  Try to answer in around 20-30 words.  "
    "Now answer the following question based on the video content: {question}"
)

_RCAP_PROMPT = (
    "Give a detailed description of the events occurring in the region marked by the red rectangle "
    "within frames [{start_frame}, {end_frame}] in this {total_frames} frame video."
)

_RTLOC_PROMPT = (
    "Given the region marked by the red rectangle in the video, please provide the start and end "
    "frame of when '{caption}' happens. Use the format [start, end] where start and end are frame "
    "numbers between {min_frame_idx} and {max_frame_idx} in this {num_frames} frame video."
)

_RDCAP_PROMPT = (
    "Create a dense caption of the subject's actions within the red rectangles, including action "
    "frames ids and brief descriptions. For each item use the format [start, end]: [description] "
    "separated by a newline, where start and end are frame numbers between {start_frame} and "
    "{end_frame} in this {total_frames} frame video."
)


def option_letter(index: int) -> str:
    """The letter of option ``index``: 0 -> "A", 1 -> "B", ..."""
    if not 0 <= index < 26:
        raise ValueError(f"option index {index} is outside A..Z")
    return chr(ord("A") + index)


def fgqa_question_block(question: str, options: Sequence[str]) -> str:
    """The FGQA question with its lettered options and the instruction, without the slip."""
    if not options:
        raise ValueError("FGQA needs at least one option")
    lines = [f"Question: {question}", "Options:"]
    lines.extend(f"({option_letter(i)}) {text}" for i, text in enumerate(options))
    # lmms-eval strips trailing whitespace from the whole block before adding the instruction.
    return "\n".join(lines).rstrip() + _FGQA_INSTRUCTION


def fgqa_prompt(question: str, options: Sequence[str], *, answer_slip: bool = True) -> str:
    """The FGQA multiple-choice prompt; options are lettered (A), (B), ... in the given order."""
    return fgqa_question_block(question, options) + (ANSWER_SLIP if answer_slip else "")


def sgqa_prompt(question: str, *, answer_slip: bool = True) -> str:
    """The SGQA open-ended question prompt (note the benchmark's double spaces)."""
    return _SGQA_PROMPT.format(question=question) + (ANSWER_SLIP if answer_slip else "")


def benchmark_frame_index(frame: int, total_frames: int, num_frames: int = NUM_VIDEO_FRAMES) -> int:
    """Map an original-video frame number into the ``num_frames`` index space as lmms-eval does.

    lmms-eval computes ``int(frame / (total_frames / num_frames))``: a truncation, not a rounding.
    It is used for RCap's prompt frames and for the RTLoc and RDCap ground truth.
    """
    if total_frames <= 0:
        raise ValueError("total_frames must be positive")
    return int(frame / (total_frames / num_frames))


def rcap_prompt(start_frame: int, end_frame: int, total_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RCap region-captioning prompt for frames ``[start_frame, end_frame]``.

    ``start_frame`` and ``end_frame`` are indices into the sampled frames. Beware a benchmark quirk:
    lmms-eval's ``plm_rcap_doc_to_text`` rescales start and end into the 32-frame space but fills
    ``{total_frames}`` with the *source video's* frame count (``doc["total_frames"]``), so to
    reproduce its strings pass that count here; the default 32 gives the self-consistent wording.
    """
    return _RCAP_PROMPT.format(start_frame=start_frame, end_frame=end_frame, total_frames=total_frames)


def rtloc_prompt(caption: str, num_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RTLoc prompt: the model answers ``[start, end]`` in 0..num_frames-1."""
    return _RTLOC_PROMPT.format(caption=caption, min_frame_idx=0, max_frame_idx=num_frames - 1,
                                num_frames=num_frames)


def rdcap_prompt(num_frames: int = NUM_VIDEO_FRAMES) -> str:
    """The RDCap prompt: the model answers lines of ``[start, end]: description``."""
    return _RDCAP_PROMPT.format(start_frame=0, end_frame=num_frames - 1, total_frames=num_frames)
