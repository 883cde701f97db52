"""Run tracking in MLflow (`cxr evaluate --track`, `cxr runs`): MLflow is imported only here, and
only when a run is tracked or listed."""
