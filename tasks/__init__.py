"""One home per task: name, prompt, token budget, expansion, answer readings, rows and metric."""
