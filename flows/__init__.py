"""insarflow flows: Prefect flows that only compose tasks (imported as ``insarflow.flows``)."""
