"""Fine-tuning outcome classifiers: datasets, training, the paper's protocol, Table 3."""
