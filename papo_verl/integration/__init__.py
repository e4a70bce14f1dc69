"""verl 0.9.1 glue: the plugin verl loads through its ``verl.plugins`` entry point and what it registers.

``plugin`` (version guard: ``verl_version``) registers ``estimator`` (``algorithm.adv_estimator=papo``),
``preflight`` (checks before Ray), ``engine`` (polarity statistics from the actor's forward pass),
``trainer`` (``trainer.v1.trainer_mode=papo``), whose actor calls install ``loss``; ``fields`` names what they
exchange through verl's batches. Every extension point and adjustment: docs/verl-integration.md.
The algorithm they call is :mod:`papo_verl.algorithm` / :mod:`papo_verl.kernels` (no verl import).
"""
