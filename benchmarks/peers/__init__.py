"""Peers on the same work: five KPIs in other stream processors, checked against the oracle."""
