"""What the report and the model card cite: the AfriSenti data (licence, BibTeX, Hub id) and the method's paper."""

ISO_639_1: dict[str, str] = {"hau": "ha", "ibo": "ig", "kin": "rw", "swa": "sw", "yor": "yo", "pcm": "pcm"}
AFRISENTI_HF_ID = "shmuhammad/AfriSenti-twitter-sentiment"

AFRISENTI_BIBTEX = """@inproceedings{muhammad-etal-2023-afrisenti,
  title = "{A}fri{S}enti: A {T}witter Sentiment Analysis Benchmark for {A}frican Languages",
  author = "Muhammad, Shamsuddeen Hassan and Abdulmumin, Idris and Ayele, Abinew Ali and Ousidhoum, Nedjma and Adelani, David Ifeoluwa and Yimam, Seid Muhie and others",
  booktitle = "Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing",
  year = "2023",
  address = "Singapore",
  publisher = "Association for Computational Linguistics",
  url = "https://aclanthology.org/2023.emnlp-main.862",
  doi = "10.18653/v1/2023.emnlp-main.862",
  pages = "13968--13981"
}"""
PAPER_BIBTEX = """@misc{raju2025afroxlmrcomet,
  title = {{AfroXLMR-Comet}: Multilingual Knowledge Distillation with Attention Matching for Low-Resource languages},
  author = {Raju, Joshua Sakthivel and S, Sanjay and Walia, Jaskaran Singh and Raghav, Srinivas and Marivate, Vukosi},
  year = {2025},
  eprint = {2502.18020},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL},
  url = {https://arxiv.org/abs/2502.18020}
}"""
AFRISENTI_LICENCE = (
    "Data: AfriSenti-SemEval 2023 (task A), licensed CC BY 4.0 "
    "(https://github.com/afrisenti-semeval/afrisent-semeval-2023); cite Muhammad et al. (2023), "
    "\"AfriSenti: A Twitter Sentiment Analysis Benchmark for African Languages\", EMNLP 2023."
)
