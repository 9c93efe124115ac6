"""The model of SPEC §2 and the pieces a training step needs from it: the batch, the encoders, AFW
(tensor-ring fusion), AMW (the weighted head), dropout, packed rows, bfloat16 weight copies, and the
balance policy of SPEC §3 (disparity ratio, coefficients, gradient modulation)."""
