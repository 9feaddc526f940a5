"""Eco-impact: CodeCarbon measurement of each phase, and the consolidated report."""
