"""Real-data ingest: one module per source, one merge.

- xml_ctgov: ClinicalTrials.gov legacy XML (AllPublicXML layout), parsed in a process pool
- json_ctgov: ClinicalTrials.gov API v2 JSON (study, page, directory, bulk ctg-studies.json.zip, streamed)
- top: TOP benchmark CSVs; iqvia: IQVIA outcome labels; drugbank: the DrugBank vocabulary
- merge: `ingest`, every given source into the store in one transaction
- sources: data/sources.toml (mirror, download, sha256) and `sample_data`, the whole mirror
- ctgov_api + fetch_ctgov: `fetch-ctgov`, full records from the API v2, page by page, resumable
- matching: DrugBank name normalization (the matching itself is SQL in core.store.trials)
"""
from core.ingest.common import IngestError
from core.ingest.merge import ingest
from core.ingest.sources import sample_data

__all__ = ["ingest", "sample_data", "IngestError"]
