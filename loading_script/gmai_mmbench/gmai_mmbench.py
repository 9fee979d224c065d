"""GMAI-MMBench loading script (``datasets`` < 4 and the Hub), delegating to ``gmai_hf.builder``.

The builder lives in the ``gmai_hf`` package (``pip install gmai-hf``), the single source of
truth; this file only exposes it under the loading-script convention. With ``datasets`` >= 4,
``import gmai_hf`` and ``load_dataset("gmai_mmbench", ...)`` instead.
"""

from __future__ import annotations

import datasets

from gmai_hf.builder import GmaiMMBench as _GmaiMMBench

_CITATION = """\
@misc{chen2024gmaimmbenchcomprehensivemultimodalevaluation,
  title={GMAI-MMBench: A Comprehensive Multimodal Evaluation Benchmark Towards General Medical AI},
  author={Pengcheng Chen and Jin Ye and Guoan Wang and Yanjun Li and Zhongying Deng and Wei Li
    and Tianbin Li and Haodong Duan and Ziyan Huang and Yanzhou Su and Benyou Wang and Shaoting Zhang
    and Bin Fu and Jianfei Cai and Bohan Zhuang and Eric J Seibel and Junjun He and Yu Qiao},
  year={2024},
  eprint={2408.03361},
  archivePrefix={arXiv},
  primaryClass={eess.IV},
  url={https://arxiv.org/abs/2408.03361},
}
"""


class GmaiMmbench(_GmaiMMBench):
    """GMAI-MMBench (``gmai_hf.builder.GmaiMMBench``), defined here so loaders find it in this module."""

    def _info(self) -> datasets.DatasetInfo:
        info = super()._info()
        info.citation = _CITATION
        return info
