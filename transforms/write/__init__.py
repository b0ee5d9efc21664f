"""The write stage: gather each video's outcomes, commit it (``index``), and account for the run."""

from transforms.write.accounting import FinishRun, SumOutcomes
from transforms.write.commit import CommitVideos
from transforms.write.gather import GatherVideos

__all__ = ["CommitVideos", "FinishRun", "GatherVideos", "SumOutcomes"]
