"""Clinical evaluation: KID x4, t-SNE, class fidelity, augmented classification, selection, report."""
