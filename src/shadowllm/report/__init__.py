"""The study's report: each claim of the paper, our numbers beside the paper's, held / not held / not testable."""
