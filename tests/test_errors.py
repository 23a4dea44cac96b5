"""Errors name the study and the file, so that a batch run can report them and go on."""

import pytest

from fusionmamba_med.errors import FusionInputError, RegistrationError, WeightsError


def test_message_names_study_and_file():
    err = FusionInputError("truncated DICOM file", study="p01", path="/data/p01/MR/IM0001.dcm")
    assert str(err) == "study 'p01', file '/data/p01/MR/IM0001.dcm': truncated DICOM file"
    assert (err.message, err.study, err.path) == ("truncated DICOM file", "p01", "/data/p01/MR/IM0001.dcm")
    assert str(FusionInputError("no pairs")) == "no pairs"


def test_with_study_fills_in_only_a_missing_study():
    err = FusionInputError("bad header", path="/x.nii")
    named = err.with_study("p02")
    assert named is not err and named.study == "p02" and named.path == "/x.nii" and "study 'p02'" in str(named)
    assert named.with_study("p03") is named  # a known study is kept


def test_registration_errors_are_input_errors_and_weights_errors_are_not():
    assert issubclass(RegistrationError, FusionInputError)
    with pytest.raises(FusionInputError):
        raise RegistrationError("no overlap", study="p01")
    assert not issubclass(WeightsError, FusionInputError)
