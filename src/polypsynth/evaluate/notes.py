"""The report's explanatory paragraphs: what each table's numbers are, how they were measured and
what their thresholds mean (report.py places them; their fields are filled from results.json)."""

from __future__ import annotations

KID_NOTE = (
    "Mean (standard error over images): the unbiased estimate over every pair of images with its "
    "jackknife error; sets over 4096 images are split into disjoint blocks, each estimated so, "
    "and the blocks' mean and combined error are shown. {space} The positive control's row shows "
    "what real images new to the reference score (each fold of the real train split against the rest; the "
    "folds' mean, with their mean error). The last row, KID(real AD, real NON_AD), is the scale: how far "
    "apart the real classes are, the most a cross-class margin can be for a generator as good as real images."
)
SPACE_NOTES = {
    "inception": "Inception features are the standard raw ones (the FID Inception network).",
    "efficientnet": "EfficientNet features (ImageNet weights, not fine-tuned) are centred and scaled once on "
    "the real training images, so their KIDs do not depend on the network's arbitrary scale.",
}
ACROSS_SPACES = " Values are not comparable across feature spaces."


def kid_note(space: str, spaces: int) -> str:
    """The note of one space's Table 2: what its features are, and (with several spaces) that
    their KIDs do not compare."""
    return KID_NOTE.format(space=SPACE_NOTES[space] + (ACROSS_SPACES if spaces > 1 else ""))


SELECTION_NOTE = (
    "Naive rule: lowest same-class KID, the rule the study warns against. Clinical rule: both cross-class "
    "margins above zero by more than 1.96 standard errors (their 95% intervals exclude zero), no class "
    "recognised clearly less often than real images of that class (fidelity status 'lost'), and no copies "
    "of training images; the eligible checkpoint with the larger smaller margin is picked. A margin within "
    "its uncertainty cannot decide either way. m_AD + m_NON_AD is free of a shift both synthetic classes "
    "share: positive while the synthetic classes stay distinct, even when both have drifted towards one real "
    "class (which turns one margin negative); at or below zero the classes collapse onto each other. The "
    "positive control is judged by the same rules: if it is not eligible, the rules cannot recognise a good "
    "generator on this data."
)
FIDELITY_NOTE = (
    "Judge: {kind}, trained on the real training split (for the positive control, each fold's judge trained "
    "without that fold). Fidelity is the share of a set that the judge names as its own class, a "
    "classifier's recall, not a pathologist's reading. Its threshold is the judge's recall of that class on "
    "the real test images: a perfect generator matches it. In brackets, fidelity minus that recall with its "
    "95% interval (Newcombe): 'lost' when the interval lies below zero, 'kept' when it excludes a loss of "
    "more than {tolerance:.2f}, 'undecided' otherwise, and 'untestable' for every class when the judge's skill "
    "on the real test images is not shown (a judge that names nearly everything AD recalls AD well without "
    "telling the classes apart). {skill}"
)
TSNE_NOTE = (
    "Map k-NN: leave-one-out accuracy of telling the four groups apart in each 2-D map (1.0 = apart), beside "
    "its chance level (the same accuracy with the group labels shuffled; not 0.25, the groups differ in "
    "size). Measured in the feature space itself, each with chance 0.50, a 95% interval and a p-value from "
    "200 permutations of the labels (the same procedure on shuffled labels): classes = balanced accuracy of "
    "a 5-NN classifier fitted on labelled real images naming the synthetic images' classes; real vs syn = "
    "accuracy, balanced over class and source, of a cross-validated ridge classifier telling real from "
    "synthetic images (a two-sample test: 0.50 indistinguishable)."
)
MEMO_NOTE = (
    "Near-copies counted per checkpoint and space, with the one-sided 95% upper bound on their rate "
    "(Clopper-Pearson). In each feature space, a synthetic image is a near-copy when it lies closer to a "
    "real training image ({feature_pools}) than {q:.0%} of real test images do; images as new as real ones "
    "give about {q:.0%} by chance, the test images' own share, which is the reference rate there (one-sided "
    "Fisher exact test). In pixel space (16-px thumbnails, correlation distance), a near-copy is the same "
    "picture: within {pixel} of an image of any training pool (labelled split, every --train-pool), as stored "
    "or mirrored either way, whole or cropped down to 80% of its side. Real test images have none there (the "
    "evaluation stops on leakage), so the reference is the tolerance, {tolerance:.0%} (exact binomial test). "
    "'copies' when the rate is shown to exceed its reference after Holm's correction over every checkpoint and "
    "space (family-wise 5%); otherwise 'not detected', with the bound. The positive control's folds are "
    "searched in the rest of the train split. Leakage (test images near-duplicated in a training pool: within "
    "{bits} hash bits or the same pixel distance, mirrored or cropped, or showing a lesion of the train split) "
    "found {pairs} pair(s)."
)
