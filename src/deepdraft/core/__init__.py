"""Pure data of a run: the outline, evidence and its citation keys, the run state, verification
verdicts, token counts. No I/O.
"""
