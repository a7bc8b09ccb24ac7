"""The benchmarks harness: RACE, FACT-local, DeepConsult pairwise, DRGym, FreshWiki outlines, and a
suite runner that compares research policies. See docs/eval.md for what each number means."""
