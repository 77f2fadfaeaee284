"""The paper's frozen-feature evaluations (k-NN, linear probe, DAVIS propagation, object discovery)."""
