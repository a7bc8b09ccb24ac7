"""The passes that finish a drafted report: claim verification and repair, the executive summary and
conclusion.
"""
