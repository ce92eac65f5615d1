"""Write a small synthetic medical anomaly-detection benchmark in the MVFA layout (or BMAD's own:
``iqeclip synth --layout bmad``, :func:`~iqeclip.data.synth.writer.write_benchmark`).

The benchmark lets the tests and the offline demo run without downloading any real data. It holds
six datasets that imitate the six MVFA/BMAD ones, each with a plausible toy anatomy, speckle or
Gaussian noise and per-image jitter of position, size and intensity::

    <out>/<Name>_AD/{valid,test}/{good,Ungood}/img/<00000.png ...>
    <out>/<Name>_AD/{valid,test}/Ungood/anomaly_mask/<same name>   # Brain, Liver, Retina_RESC
    <out>/fewshot_seed/<Name>/<K>-shot.txt                           # K in 2, 4, 8, 16

==============  =====================  ===================================================  ====
Dataset         Image                  Anomaly                                              Mask
==============  =====================  ===================================================  ====
Brain           grey MRI slice         bright irregular tumour-like mass in the brain       yes
Liver           grey abdominal CT      dark (hypodense) lesion inside the liver             yes
Retina_RESC     grey OCT B-scan        dark fluid pocket between the retinal layers         yes
Retina_OCT2017  grey OCT B-scan, JPEG  drusen under the RPE, or a fluid pocket              no
Chest           grey chest X-ray       bright opacity in one lung field                     no
Histopathology  RGB H&E-like tile      cluster of enlarged, dark, irregular nuclei          no
==============  =====================  ===================================================  ====

Masks are 0/255 PNGs (mode ``L``) marking exactly the pixels that the anomaly changed. Images in
a class folder are numbered from ``00000`` on; ``Retina_OCT2017`` images are JPEG (quality 95),
all others PNG. A ``K-shot.txt`` file holds two lines, abnormal first, naming K distinct images of
the ``valid`` split::

    a-0: 00003.png 00011.png
    n-0: 00001.png 00007.png

Everything is deterministic: the same seed gives byte-identical files, and each image is drawn
from its own random stream derived from (seed, dataset, split, class, index), so a larger
``size`` only adds images and never changes the first ones.

Example:
    >>> from iqeclip.data.synth import write_benchmark
    >>> counts = write_benchmark("data/synth", size=12, seed=0)  # doctest: +SKIP
    >>> counts["Brain"]  # doctest: +SKIP
    {'valid': 32, 'test': 24}
"""

from iqeclip.data.synth.modalities import _RENDERERS as _RENDERERS  # the tests render directly
from iqeclip.data.synth.writer import DATASETS, MASK_DATASETS, SHOTS, write_benchmark
from iqeclip.data.synth.writer import _stream as _stream

__all__ = ["DATASETS", "MASK_DATASETS", "SHOTS", "write_benchmark"]
