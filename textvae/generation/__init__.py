"""Generation: decoding (greedy, sampling, beam, constraints) and the resumable JSONL writer."""
