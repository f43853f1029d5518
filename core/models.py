"""Value types the pipeline passes between its steps (no behaviour beyond small properties)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class FewShotExample:
    """One retrieved trial as the prompt carries it (not a training example: core.finetune has those)."""
    nct_id: str
    label: int
    text: str                 # what goes into the prompt
    tokens: int               # exact, with the target model's tokenizer
    original_tokens: int      # before fitting to the budget
    truncated: bool = False
    dropped: list[str] = field(default_factory=list)    # sections dropped / texts shortened


@dataclass
class Retrieval:
    drugbank_id: str
    intervention: str         # DrugBank common name
    label: int
    rule: str
    seed: int | None
    examples: list[FewShotExample]
    budget: int | None
    n_full: int = 0           # examples drawn from full ClinicalTrials.gov records
    n_top: int = 0            # examples that are TOP rows only (when the drug has too few full records)
    compact: bool = False     # examples serialized in the trial schema's shape (small contexts)

    @property
    def truncated(self) -> bool:
        return any(e.truncated for e in self.examples)

    @property
    def tokens(self) -> int:
        return sum(e.tokens for e in self.examples)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["truncated"] = self.truncated
        d["tokens"] = self.tokens
        return d
