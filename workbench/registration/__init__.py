"""Registration of the MRI to tracked ultrasound: ``ReferenceToMri``.

- :mod:`~workbench.registration.result`: the result object every method returns.
- :mod:`~workbench.registration.landmarks`: paired-point (landmark) registration, FRE, leave-one-out
  error, outliers and Fitzpatrick's predicted TRE.
- :mod:`~workbench.registration.intensity`, :mod:`~workbench.registration.surface`: automatic
  refinement (LC2, Mattes MI baseline) and bone-surface ICP.
- :mod:`~workbench.registration.frames_lc2`: LC2 directly on the tracked frames (a local refinement).
- :mod:`~workbench.registration.piecewise`: one ``ReferenceToMri`` per vertebra for posture change.
- :mod:`~workbench.registration.pipeline`: landmarks, then the chosen refinements, as one call
  returning one ``RegistrationResult`` (the demo, the registration widget and the benchmark use it).
- :mod:`~workbench.registration.bench`: the accuracy benchmark on simulated cases.

Frames: docs/frames.md.
"""
