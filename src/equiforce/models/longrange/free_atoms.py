"""Free-atom static dipole polarisabilities α and C6 coefficients (atomic units).

SO3LR's dispersion (:mod:`equiforce.models.longrange.dispersion`) scales these
per-element references by the learned Hirshfeld ratio h_i: α_i = α_i^free·h_i,
C6_i = C6_i^free·h_i².

Provenance: the table of ``so3krates-torch`` 0.2.1
(``so3krates_torch/blocks/physical_potentials.py``, ``ALPHAS`` and ``C6_COEF``,
MIT licence, copyright 2022 the so3krates-torch authors), which states that it
comes from mlff's ``dispersion_ref_data`` (branch ``v1.0-lrs-gems``), the data
the released SO3LR model was trained with. These are the free-atom reference
values of the Tkatchenko–Scheffler method (Tkatchenko, Scheffler, PRL 102,
073005 (2009); most elements from Chu, Dalgarno, J. Chem. Phys. 121, 4083
(2004)); spot checks agree (H 4.5/6.5, C 12.0/46.6, N 7.4/24.2, O 5.4/15.6), the
full table was not checked element by element against an independent source.
Elements 1-102 (H-No); index = Z - 1. Units: α in bohr³, C6 in hartree·bohr⁶.
"""

from __future__ import annotations

#: (α, C6) of elements Z = 1…102, in bohr³ and hartree·bohr⁶; row Z - 1.
FREE_ATOM_ALPHA_C6: tuple[tuple[float, float], ...] = (
    (4.5, 6.5),  # 1 H
    (1.38, 1.46),  # 2 He
    (164.2, 1387.0),  # 3 Li
    (38.0, 214.0),  # 4 Be
    (21.0, 99.5),  # 5 B
    (12.0, 46.6),  # 6 C
    (7.4, 24.2),  # 7 N
    (5.4, 15.6),  # 8 O
    (3.8, 9.52),  # 9 F
    (2.67, 6.38),  # 10 Ne
    (162.7, 1556.0),  # 11 Na
    (71.0, 627.0),  # 12 Mg
    (60.0, 528.0),  # 13 Al
    (37.0, 305.0),  # 14 Si
    (25.0, 185.0),  # 15 P
    (19.6, 134.0),  # 16 S
    (15.0, 94.6),  # 17 Cl
    (11.1, 64.3),  # 18 Ar
    (292.9, 3897.0),  # 19 K
    (160.0, 2221.0),  # 20 Ca
    (120.0, 1383.0),  # 21 Sc
    (98.0, 1044.0),  # 22 Ti
    (84.0, 832.0),  # 23 V
    (78.0, 602.0),  # 24 Cr
    (63.0, 552.0),  # 25 Mn
    (56.0, 482.0),  # 26 Fe
    (50.0, 408.0),  # 27 Co
    (48.0, 373.0),  # 28 Ni
    (42.0, 253.0),  # 29 Cu
    (40.0, 284.0),  # 30 Zn
    (60.0, 498.0),  # 31 Ga
    (41.0, 354.0),  # 32 Ge
    (29.0, 246.0),  # 33 As
    (25.0, 210.0),  # 34 Se
    (20.0, 162.0),  # 35 Br
    (16.8, 129.6),  # 36 Kr
    (319.2, 4691.0),  # 37 Rb
    (199.0, 3170.0),  # 38 Sr
    (126.74, 1968.58),  # 39 Y
    (119.97, 1677.91),  # 40 Zr
    (101.6, 1263.61),  # 41 Nb
    (88.42, 1028.73),  # 42 Mo
    (80.08, 1390.87),  # 43 Tc
    (65.89, 609.75),  # 44 Ru
    (56.1, 469.0),  # 45 Rh
    (23.68, 157.5),  # 46 Pd
    (50.6, 339.0),  # 47 Ag
    (39.7, 452.0),  # 48 Cd
    (70.22, 707.05),  # 49 In
    (55.95, 587.42),  # 50 Sn
    (43.67, 459.32),  # 51 Sb
    (37.65, 396.0),  # 52 Te
    (35.0, 385.0),  # 53 I
    (27.3, 285.9),  # 54 Xe
    (399.9, 6846.0),  # 55 Cs
    (275.0, 5727.0),  # 56 Ba
    (213.7, 3884.5),  # 57 La
    (204.7, 3708.33),  # 58 Ce
    (215.8, 3911.84),  # 59 Pr
    (208.4, 3908.75),  # 60 Nd
    (200.2, 3847.68),  # 61 Pm
    (192.1, 3708.69),  # 62 Sm
    (184.2, 3511.71),  # 63 Eu
    (158.3, 2781.53),  # 64 Gd
    (169.5, 3124.41),  # 65 Tb
    (164.64, 2984.29),  # 66 Dy
    (156.3, 2839.95),  # 67 Ho
    (150.2, 2724.12),  # 68 Er
    (144.3, 2576.78),  # 69 Tm
    (138.9, 2387.53),  # 70 Yb
    (137.2, 2371.8),  # 71 Lu
    (99.52, 1274.8),  # 72 Hf
    (82.53, 1019.92),  # 73 Ta
    (71.04, 847.93),  # 74 W
    (63.04, 710.2),  # 75 Re
    (55.06, 596.67),  # 76 Os
    (42.51, 359.1),  # 77 Ir
    (39.68, 347.1),  # 78 Pt
    (36.5, 298.0),  # 79 Au
    (33.9, 392.0),  # 80 Hg
    (69.92, 717.44),  # 81 Tl
    (61.8, 697.0),  # 82 Pb
    (49.02, 571.0),  # 83 Bi
    (45.01, 530.92),  # 84 Po
    (38.93, 457.53),  # 85 At
    (33.54, 390.63),  # 86 Rn
    (317.8, 4224.44),  # 87 Fr
    (246.2, 4851.32),  # 88 Ra
    (203.3, 3604.41),  # 89 Ac
    (217.0, 4047.54),  # 90 Th
    (154.4, 2876.77),  # 91 Pa
    (127.8, 2375.89),  # 92 U
    (150.5, 3102.12),  # 93 Np
    (132.2, 2820.47),  # 94 Pu
    (131.2, 2794.0),  # 95 Am
    (143.6, 3150.95),  # 96 Cm
    (125.3, 2756.0),  # 97 Bk
    (121.5, 2702.57),  # 98 Cf
    (117.5, 2626.59),  # 99 Es
    (113.4, 2548.62),  # 100 Fm
    (109.4, 2468.69),  # 101 Md
    (105.4, 2386.8),  # 102 No
)

#: Largest atomic number with reference data.
MAX_Z: int = len(FREE_ATOM_ALPHA_C6)
