"""Reports over evaluation results: tables, statistics and plots."""
