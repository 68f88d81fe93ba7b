"""Usage and audit reports for admins: plain data, text tables, a chart and CSV."""
