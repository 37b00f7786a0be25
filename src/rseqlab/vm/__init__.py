"""Real kernels in the loop: fetch or build Linux kernels, boot them under QEMU, record inside.

``kernels`` finds and caches kernels (Debian's binary kernels, or builds from Debian's upstream
source tarballs with ``CONFIG_RSEQ_STATS``); ``qemu`` boots one with a small initramfs; the guest
side (``guest/``) is a static recorder whose output ``ingest`` turns into an ordinary rseqlab trace.
"""
