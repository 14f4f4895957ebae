"""PLUS device-set XML reader: exact values from the shared configs, PLUS defaults, every error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import DeviceSetError
from workbench.frames import TransformRepository
from workbench.io.plus_config import (
    CoordinateDefinition,
    HoleFillingElement,
    VolumeReconstructionConfig,
    describe_device_set,
    read_device_set,
)

SPINE = "plus-spine-phantom-freehand"
NWIRE_CONFIG = "plus-nwire-freehand/PlusDeviceSet_NwirePhantomFreehand_vtkVolumeReconstructorTest2.xml"

# ImageToProbe of the spine-phantom configs, copied by hand from the XML.
SPINE_IMAGE_TO_PROBE = np.array(
    [
        [-0.00157821, 0.0785919, -0.00803285, 15.3978],
        [-0.0839128, 0.00372697, 0.0153803, 49.5705],
        [0.0159024, 0.00714276, 0.0803604, -8.63446],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SPINE_PHANTOM_TO_REFERENCE = np.array(
    [
        [-0.0263954, 0.0123051, -0.999576, 11.9823],
        [0.0167829, 0.999789, 0.0118645, -37.1153],
        [0.999511, -0.0164626, -0.0265963, -85.3543],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
STICK_9_1 = HoleFillingElement(type="STICK", stick_length_limit=9, number_of_sticks_to_use=1)


def _all_plus_xml_files() -> list[Path]:
    from conftest import SHARED_DATA

    return sorted(SHARED_DATA.glob("plus-*/**/*.xml"))


def _write(tmp_path: Path, body: str, name: str = "config.xml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _config_with_transform(matrix: str, from_frame: str = "Image", to_frame: str = "Probe") -> str:
    return (
        "<PlusConfiguration><CoordinateDefinitions>"
        f'<Transform From="{from_frame}" To="{to_frame}" Matrix="{matrix}"/>'
        "</CoordinateDefinitions></PlusConfiguration>"
    )


def _config_with_reconstruction(attributes: str, children: str = "") -> str:
    return (
        f'<PlusConfiguration><VolumeReconstruction OutputSpacing="0.5 0.5 0.5" {attributes}>'
        f"{children}</VolumeReconstruction></PlusConfiguration>"
    )


# -- the spine-phantom configs ------------------------------------------------------


def test_spine_nn_mean_calibration_exactly_as_in_the_file(shared_data):
    device_set = read_device_set(shared_data / SPINE / "PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml")
    names = [d.name for d in device_set.coordinate_definitions]
    assert names == ["ImageToProbe", "PhantomToReference"]
    image_to_probe = device_set.coordinate_definitions[0]
    assert np.array_equal(image_to_probe.transform.matrix, SPINE_IMAGE_TO_PROBE)
    assert image_to_probe.error == 1.68149
    assert image_to_probe.date == "022312_110631"
    assert image_to_probe.persistent is True
    phantom = device_set.coordinate_definitions[1]
    assert np.array_equal(phantom.transform.matrix, SPINE_PHANTOM_TO_REFERENCE)
    assert (phantom.error, phantom.date) == (1.87619, "022312_110322")
    assert np.array_equal(device_set.image_to_probe().matrix, SPINE_IMAGE_TO_PROBE)


def test_spine_pixel_spacing_is_the_column_norms(shared_data):
    device_set = read_device_set(shared_data / SPINE / "PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml")
    linear = SPINE_IMAGE_TO_PROBE[:3, :3]
    expected_x = np.sqrt(np.sum(linear[:, 0] ** 2))
    expected_y = np.sqrt(np.sum(linear[:, 1] ** 2))
    spacing_x, spacing_y = device_set.coordinate_definitions[0].pixel_spacing_mm
    assert spacing_x == pytest.approx(expected_x, abs=1e-12)
    assert spacing_y == pytest.approx(expected_y, abs=1e-12)
    assert (spacing_x, spacing_y) == pytest.approx((0.08542, 0.07900), abs=1e-5)
    # Not an image transform: no pixel spacing.
    assert device_set.coordinate_definitions[1].pixel_spacing_mm is None


SPINE_RECONSTRUCTIONS = [
    ("PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml", "NEAREST_NEIGHBOR", "MEAN", True),
    ("PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MAXI.xml", "NEAREST_NEIGHBOR", "MAXIMUM", True),
    ("PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_MAXI.xml", "LINEAR", "MAXIMUM", False),
    ("PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_LATE.xml", "LINEAR", "LATEST", False),
    ("PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml", "LINEAR", "MEAN", True),
]


@pytest.mark.parametrize("name, interpolation, compounding, fill_holes", SPINE_RECONSTRUCTIONS)
def test_spine_volume_reconstruction_settings(shared_data, name, interpolation, compounding, fill_holes):
    config = read_device_set(shared_data / SPINE / name).volume_reconstruction
    expected = VolumeReconstructionConfig(
        output_spacing_mm=(0.5, 0.5, 0.5),
        clip_rectangle_origin_px=(0, 0),
        clip_rectangle_size_px=(820, 616),
        interpolation=interpolation,
        optimization="FULL",
        compounding_mode=compounding,
        fill_holes=fill_holes,
        number_of_threads=1,
        hole_filling_elements=(STICK_9_1,) if fill_holes else (),
    )
    assert config == expected


def test_nwire_config(shared_data):
    device_set = read_device_set(shared_data / NWIRE_CONFIG)
    config = device_set.volume_reconstruction
    assert (config.interpolation, config.optimization, config.compounding_mode) == ("LINEAR", "NONE", "MEAN")
    assert config.clip_rectangle_origin_px == (167, 62)
    assert config.clip_rectangle_size_px == (495, 488)
    assert config.output_spacing_mm == (0.5, 0.5, 0.5)
    assert (config.fill_holes, config.number_of_threads) == (False, 1)
    phantom_to_reference, image_to_probe = device_set.coordinate_definitions
    assert phantom_to_reference.name == "PhantomToReference"
    assert np.array_equal(phantom_to_reference.transform.matrix, np.eye(4))
    assert phantom_to_reference.error == 0.0 and phantom_to_reference.date is None
    assert image_to_probe.error == 0.508027 and image_to_probe.date == "2011.08.19 14:11:53"
    assert image_to_probe.transform.matrix[0].tolist() == [-0.0094, -0.0739, -0.0028, -103.5322]


CALIBRATION_CONFIGS = {
    "PlusDeviceSet_fCal_Sim_VolumeReconstruction.xml": [
        "ImageToProbe",
        "ImageToTransducerOriginPixel",
        "PhantomToReference",
        "StylusTipToStylus",
        "TransducerOriginPixelToTransducerOrigin",
    ],
    "PlusDeviceSet_fCal_Ultrasonix_C5-2_Ascension3DG_3.xml": ["ImageToTransducerOriginPixel"],
    "PlusDeviceSet_fCal_Ultrasonix_C5-2_NDIPolaris_fCal3.xml": ["ImageToTransducerOriginPixel"],
    "PlusDeviceSet_fCal_Ultrasonix_L14-5_Ascension3DG_3.0.xml": ["ImageToTransducerOriginPixel"],
}


@pytest.mark.parametrize("name", sorted(CALIBRATION_CONFIGS))
def test_calibration_configs_parse_with_their_frames(shared_data, name):
    device_set = read_device_set(shared_data / "plus-calibration-configs" / name)
    assert [d.name for d in device_set.coordinate_definitions] == CALIBRATION_CONFIGS[name]
    assert device_set.name.startswith("fCal: ")
    config = device_set.volume_reconstruction
    assert config.output_spacing_mm == (0.5, 0.5, 0.5)
    assert config.clip_rectangle_size_px == (820, 616)
    assert (config.interpolation, config.compounding_mode) == ("LINEAR", "MEAN")


def test_sim_calibration_values_and_scientific_notation(shared_data):
    device_set = read_device_set(shared_data / "plus-calibration-configs/PlusDeviceSet_fCal_Sim_VolumeReconstruction.xml")
    image_to_probe = device_set.image_to_probe()
    assert image_to_probe.matrix[1].tolist() == [-0.0803396, -8.23381e-005, 0.00160118, 48.4359]
    pixel = device_set.coordinate_definitions[1]
    assert pixel.name == "ImageToTransducerOriginPixel"
    assert pixel.pixel_spacing_mm is None  # ends in a pixel frame
    assert pixel.error is None and pixel.date == "2011.12.06 17:57:00"
    assert [(d.device_id, d.device_type) for d in device_set.devices] == [
        ("TrackedVideoDevice", "SavedDataSource"),
        ("CaptureDevice", "VirtualCapture"),
    ]


def test_fan_settings_and_devices_of_the_polaris_config(shared_data):
    device_set = read_device_set(shared_data / "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_C5-2_NDIPolaris_fCal3.xml")
    config = device_set.volume_reconstruction
    assert config.fan_origin_px == (410.0, -140.0)
    assert config.fan_angles_deg == (-28.0, 28.0)
    assert (config.fan_radius_start_px, config.fan_radius_stop_px) == (200.0, 735.0)
    assert config.enable_fan_angles_auto_detect is True
    assert config.fan_angles_auto_detect_brightness_threshold == 10.0
    assert config.fan_angles_auto_detect_filter_radius_px == 10  # PLUS default
    assert config.fan_clipping_applied
    tracker = device_set.devices[0]
    assert (tracker.device_id, tracker.device_type) == ("TrackerDevice", "PolarisTracker")
    assert tracker.data_sources == (("Probe", "Tool"), ("Stylus", "Tool"), ("Reference", "Tool"))
    assert tracker.output_channel_ids == ("TrackerStream",)
    mixer = device_set.devices[2]
    assert mixer.input_channel_ids == ("TrackerStream", "VideoStream")


def test_no_image_to_probe_raises(shared_data):
    device_set = read_device_set(shared_data / "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_L14-5_Ascension3DG_3.0.xml")
    with pytest.raises(DeviceSetError, match="no ImageToProbe calibration"):
        device_set.image_to_probe()


@pytest.mark.parametrize("path", _all_plus_xml_files(), ids=lambda p: p.name)
def test_every_shared_plus_xml_parses(path):
    device_set = read_device_set(path)
    # Processing-parameter files (e.g. PlusTransverseProcessEnhancerTestingParameters.xml) are
    # PlusConfiguration files without a CoordinateDefinitions element; every device set has one.
    has_definitions = "<CoordinateDefinitions" in path.read_text(encoding="utf-8", errors="replace")
    assert (len(device_set.coordinate_definitions) >= 1) == has_definitions
    calibrations = [d for d in device_set.coordinate_definitions if d.name == "ImageToProbe"]
    for calibration in calibrations:
        matrix = device_set.image_to_probe().matrix
        assert np.all(np.isfinite(matrix))
        assert matrix[3].tolist() == [0.0, 0.0, 0.0, 1.0]
        # Every shared calibration is a linear probe imaged at roughly 0.07-0.09 mm per pixel.
        assert all(0.07 < spacing_mm < 0.09 for spacing_mm in calibration.pixel_spacing_mm)


def test_shared_xml_files_are_found(shared_data):
    # at least the ten of the first data drop; later drops add more (plus-spine-bone-L14)
    files = _all_plus_xml_files()
    assert len(files) >= 10
    assert any(f.name == "PlusDeviceSet_fCal_Ultrasonix_L14-5_Ascension3DG_3.0.xml" for f in files)


# -- transform repository --------------------------------------------------------


def test_transform_repository_chains_the_definitions(shared_data):
    device_set = read_device_set(shared_data / "plus-calibration-configs/PlusDeviceSet_fCal_Sim_VolumeReconstruction.xml")
    repository = device_set.transform_repository()
    assert isinstance(repository, TransformRepository)
    assert len(repository) == 5
    image_to_origin = repository.get("ImageToTransducerOrigin").matrix
    scale = np.diag([0.0803671, 0.074448, 0.0774079, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = [-410, 5, 0]
    assert np.allclose(image_to_origin, scale @ shift, atol=1e-12)


# -- PLUS defaults ---------------------------------------------------------------


def test_absent_attributes_take_the_plus_defaults(tmp_path):
    path = _write(tmp_path, _config_with_reconstruction(""))
    config = read_device_set(path).volume_reconstruction
    assert config == VolumeReconstructionConfig(output_spacing_mm=(0.5, 0.5, 0.5))
    assert config.output_origin_mm == (0.0, 0.0, 0.0)
    assert config.output_extent is None
    assert config.clip_rectangle_origin_px == (0, 0) and config.clip_rectangle_size_px == (0, 0)
    assert config.fan_angles_deg == (0.0, 0.0) and not config.fan_clipping_applied
    assert (config.fan_radius_start_px, config.fan_radius_stop_px) == (0.0, 500.0)
    assert config.fan_angles_auto_detect_brightness_threshold == 30.0
    assert config.fan_angles_auto_detect_filter_radius_px == 10
    assert (config.interpolation, config.optimization, config.compounding_mode) == ("NEAREST_NEIGHBOR", "FULL", "MEAN")
    assert (config.number_of_threads, config.skip_interval, config.fill_holes) == (0, 1, False)
    assert config.pixel_rejection_threshold is None
    assert config.reference_coordinate_frame is None and config.image_coordinate_frame is None
    assert config.image_to_reference_name == "ImageToReference"


def test_explicit_frames_extent_and_origin(tmp_path):
    attributes = (
        'ImageCoordinateFrame="Image" ReferenceCoordinateFrame="Tracker" OutputOrigin="-15 -15 30" '
        'OutputExtent="0 300 0 300 0 300" PixelRejectionThreshold="3" SkipInterval="2"'
    )
    config = read_device_set(_write(tmp_path, _config_with_reconstruction(attributes))).volume_reconstruction
    assert config.image_to_reference_name == "ImageToTracker"
    assert config.output_origin_mm == (-15.0, -15.0, 30.0)
    assert config.output_extent == (0, 300, 0, 300, 0, 300)
    assert (config.pixel_rejection_threshold, config.skip_interval) == (3.0, 2)


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ('Compounding="OFF"', "LATEST"),
        ('Compounding="ON"', "MEAN"),
        ('Calculation="MAXIMUM" Compounding="OFF"', "MAXIMUM"),
        ('Calculation="WEIGHTED_AVERAGE"', "MEAN"),
        ('CompoundingMode="latest" Calculation="MAXIMUM"', "LATEST"),
        ('CompoundingMode="IMPORTANCEMASK" ImportanceMaskFilename="ImportanceMask.png"', "IMPORTANCEMASK"),
    ],
)
def test_compounding_mode_including_deprecated_attributes(tmp_path, attributes, expected):
    config = read_device_set(_write(tmp_path, _config_with_reconstruction(attributes))).volume_reconstruction
    assert config.compounding_mode == expected


def test_skip_interval_below_one_becomes_one_with_a_warning(tmp_path):
    path = _write(tmp_path, _config_with_reconstruction('SkipInterval="0"'))
    with pytest.warns(UserWarning, match="SkipInterval 0"):
        assert read_device_set(path).volume_reconstruction.skip_interval == 1


def test_hole_filling_elements_of_every_type(tmp_path):
    children = (
        "<HoleFilling>"
        '<HoleFillingElement Type="GAUSSIAN" Size="5" Stdev="1.5" MinimumKnownVoxelsRatio="0.25"/>'
        '<HoleFillingElement Type="distance_weight_inverse" Size="7" MinimumKnownVoxelsRatio="0.5"/>'
        '<HoleFillingElement Type="STICK" StickLengthLimit="9" NumberOfSticksToUse="1"/>'
        "</HoleFilling>"
    )
    path = _write(tmp_path, _config_with_reconstruction('FillHoles="on"', children))
    assert read_device_set(path).volume_reconstruction.hole_filling_elements == (
        HoleFillingElement(type="GAUSSIAN", size=5, stdev=1.5, minimum_known_voxels_ratio=0.25),
        HoleFillingElement(type="DISTANCE_WEIGHT_INVERSE", size=7, minimum_known_voxels_ratio=0.5),
        STICK_9_1,
    )


def test_hole_filling_is_ignored_when_fill_holes_is_off(tmp_path):
    children = '<HoleFilling><HoleFillingElement Type="BOGUS"/></HoleFilling>'
    path = _write(tmp_path, _config_with_reconstruction('FillHoles="OFF"', children))
    assert read_device_set(path).volume_reconstruction.hole_filling_elements == ()


def test_config_without_volume_reconstruction_or_definitions(tmp_path):
    device_set = read_device_set(_write(tmp_path, "<PlusConfiguration/>"))
    assert device_set.volume_reconstruction is None
    assert device_set.coordinate_definitions == () and device_set.devices == ()
    assert device_set.name is None


def test_persistent_flag(tmp_path):
    body = (
        "<PlusConfiguration><CoordinateDefinitions>"
        '<Transform From="Needle" To="Reference" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" Persistent="FALSE"/>'
        "</CoordinateDefinitions></PlusConfiguration>"
    )
    (definition,) = read_device_set(_write(tmp_path, body)).coordinate_definitions
    assert definition == CoordinateDefinition(definition.transform, error=None, date=None, persistent=False)


# -- describe ----------------------------------------------------------------------


def test_describe_device_set_is_json_ready(shared_data):
    path = shared_data / SPINE / "PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MAXI.xml"
    info = json.loads(json.dumps(describe_device_set(path), allow_nan=False))
    assert info["kind"] == "device_set"
    assert info["path"] == str(path)
    assert info["name"] is None
    first = info["coordinate_definitions"][0]
    assert (first["name"], first["error"], first["date"]) == ("ImageToProbe", 1.68149, "022312_110631")
    assert first["pixel_spacing_mm"] == pytest.approx([0.0854209, 0.0790038], abs=1e-7)
    assert first["matrix"] == SPINE_IMAGE_TO_PROBE.ravel().tolist()
    assert first["is_rigid"] is False
    assert info["coordinate_definitions"][1]["pixel_spacing_mm"] is None
    assert info["coordinate_definitions"][1]["is_rigid"] is True
    reconstruction = info["volume_reconstruction"]
    assert reconstruction["output_spacing_mm"] == [0.5, 0.5, 0.5]
    assert reconstruction["clip_rectangle_size_px"] == [820, 616]
    assert reconstruction["compounding_mode"] == "MAXIMUM"
    assert reconstruction["hole_filling_elements"] == [
        {
            "type": "STICK",
            "size": None,
            "stdev": None,
            "minimum_known_voxels_ratio": None,
            "stick_length_limit": 9,
            "number_of_sticks_to_use": 1,
        }
    ]
    assert info["devices"] == []


def test_describe_lists_devices(shared_data):
    info = describe_device_set(shared_data / "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_L14-5_Ascension3DG_3.0.xml")
    assert info["devices"][0] == {
        "id": "TrackerDevice",
        "type": "Ascension3DG",
        "data_sources": [
            {"id": "Probe", "type": "Tool"},
            {"id": "Reference", "type": "Tool"},
            {"id": "Stylus", "type": "Tool"},
        ],
        "input_channels": [],
        "output_channels": ["TrackerStream"],
    }
    assert info["description"].startswith("Ascension3DG sensors should be plugged in")


# -- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DeviceSetError, match="file not found"):
        read_device_set(tmp_path / "absent.xml")


def test_not_xml(tmp_path):
    path = _write(tmp_path, "ObjectType = Image\nNDims = 3\n")
    with pytest.raises(DeviceSetError, match=r"not well-formed XML at line 1, column 0: syntax error"):
        read_device_set(path)


def test_truncated_xml_names_the_line(tmp_path):
    path = _write(tmp_path, "<PlusConfiguration>\n  <CoordinateDefinitions>\n    <Transform From=")
    with pytest.raises(DeviceSetError, match=r"not well-formed XML at line 3"):
        read_device_set(path)


def test_binary_file(tmp_path):
    path = tmp_path / "binary.xml"
    path.write_bytes(b"\x00\x01\x02\xff" * 10)
    with pytest.raises(DeviceSetError, match="not well-formed XML"):
        read_device_set(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DeviceSetError, match="cannot read the file"):
        read_device_set(tmp_path)


def test_root_is_not_plus_configuration(tmp_path):
    path = _write(tmp_path, "<DeviceSet/>")
    with pytest.raises(DeviceSetError, match=r"root element is <DeviceSet>, expected <PlusConfiguration>"):
        read_device_set(path)


@pytest.mark.parametrize(
    "matrix, message",
    [
        ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0", "Matrix has 15 numbers, expected 16"),
        ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 7", "Matrix has 17 numbers, expected 16"),
        ("1 0 0 0 0 1 0 0 0 0 1 zero 0 0 0 1", "Matrix has a non-numeric value 'zero'"),
        ("1 0 0 nan 0 1 0 0 0 0 1 0 0 0 0 1", "Matrix contains NaN or infinity"),
        ("1 0 0 inf 0 1 0 0 0 0 1 0 0 0 0 1", "Matrix contains NaN or infinity"),
        ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 1 1", "Matrix last row is '0 0 1 1', expected '0 0 0 1'"),
        ("0 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", "matrix is singular"),
    ],
)
def test_bad_matrix(tmp_path, matrix, message):
    path = _write(tmp_path, _config_with_transform(matrix))
    with pytest.raises(DeviceSetError, match=message) as info:
        read_device_set(path)
    assert "Transform From='Image' To='Probe'" in str(info.value)
    assert str(path) in str(info.value)


def test_transform_without_matrix(tmp_path):
    body = '<PlusConfiguration><CoordinateDefinitions><Transform From="A" To="B"/></CoordinateDefinitions></PlusConfiguration>'
    with pytest.raises(DeviceSetError, match="has no Matrix attribute"):
        read_device_set(_write(tmp_path, body))


@pytest.mark.parametrize("from_frame, to_frame", [("", "Probe"), ("Image", "")])
def test_transform_without_from_or_to(tmp_path, from_frame, to_frame):
    path = _write(tmp_path, _config_with_transform("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", from_frame, to_frame))
    with pytest.raises(DeviceSetError, match="lacks its From or To attribute"):
        read_device_set(path)


def test_frame_name_containing_to(tmp_path):
    path = _write(tmp_path, _config_with_transform("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", "ImageTop", "Probe"))
    with pytest.raises(DeviceSetError, match="frame name 'ImageTop' contains 'To'"):
        read_device_set(path)


def test_invalid_frame_name_characters(tmp_path):
    path = _write(tmp_path, _config_with_transform("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", "Image", "Probe 2"))
    with pytest.raises(DeviceSetError, match="invalid frame name 'Probe 2'"):
        read_device_set(path)


def test_duplicate_transform(tmp_path):
    identity = "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"
    body = (
        "<PlusConfiguration><CoordinateDefinitions>"
        f'<Transform From="Image" To="Probe" Matrix="{identity}"/>'
        f'<Transform From="Probe" To="Image" Matrix="{identity}"/>'
        "</CoordinateDefinitions></PlusConfiguration>"
    )
    with pytest.raises(DeviceSetError, match="defines the transform between Image and Probe twice"):
        read_device_set(_write(tmp_path, body))


def test_non_numeric_error_attribute(tmp_path):
    body = (
        "<PlusConfiguration><CoordinateDefinitions>"
        '<Transform From="Image" To="Probe" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" Error="small"/>'
        "</CoordinateDefinitions></PlusConfiguration>"
    )
    with pytest.raises(DeviceSetError, match="Error must be a number, got 'small'"):
        read_device_set(_write(tmp_path, body))


@pytest.mark.parametrize(
    "spacing, message",
    [
        ("0.5 0.5", "OutputSpacing must be 3 numbers, got '0.5 0.5'"),
        ("0.5 0.5 0.5 0.5", "OutputSpacing must be 3 numbers"),
        ("0.5 abc 0.5", "OutputSpacing must be 3 numbers, got '0.5 abc 0.5'"),
        ("0.5 0 0.5", "OutputSpacing must be 3 positive numbers, got '0.5 0 0.5'"),
        ("0.5 -1 0.5", "OutputSpacing must be 3 positive numbers"),
        ("0.5 nan 0.5", "OutputSpacing must be finite"),
    ],
)
def test_bad_output_spacing(tmp_path, spacing, message):
    body = f'<PlusConfiguration><VolumeReconstruction OutputSpacing="{spacing}"/></PlusConfiguration>'
    with pytest.raises(DeviceSetError, match=message):
        read_device_set(_write(tmp_path, body))


def test_missing_output_spacing(tmp_path):
    body = '<PlusConfiguration><VolumeReconstruction Interpolation="LINEAR"/></PlusConfiguration>'
    with pytest.raises(DeviceSetError, match="VolumeReconstruction OutputSpacing is required but absent"):
        read_device_set(_write(tmp_path, body))


@pytest.mark.parametrize(
    "attributes, message",
    [
        ('Interpolation="CUBIC"', "Interpolation is 'CUBIC'; allowed values: NEAREST_NEIGHBOR, LINEAR"),
        ('Optimization="FAST"', "Optimization is 'FAST'; allowed values: FULL, PARTIAL, NONE"),
        ('CompoundingMode="MEDIAN"', "CompoundingMode is 'MEDIAN'; allowed values: MEAN, LATEST, MAXIMUM, IMPORTANCEMASK"),
        ('Compounding="YES"', "Compounding is 'YES'; allowed values: ON, OFF"),
        ('Calculation="MIN"', "Calculation is 'MIN'; allowed values: WEIGHTED_AVERAGE, MAXIMUM"),
        ('FillHoles="TRUE"', "FillHoles is 'TRUE'; allowed values: ON, OFF"),
        ('EnableFanAnglesAutoDetect="ON"', "EnableFanAnglesAutoDetect is 'ON'; allowed values: TRUE, FALSE"),
    ],
)
def test_bad_enum(tmp_path, attributes, message):
    with pytest.raises(DeviceSetError, match=message):
        read_device_set(_write(tmp_path, _config_with_reconstruction(attributes)))


@pytest.mark.parametrize(
    "attributes, message",
    [
        ('ClipRectangleSize="820.5 616"', "ClipRectangleSize must be 2 integers, got '820.5 616'"),
        ('OutputExtent="0 300 0 300 0"', "OutputExtent must be 6 integers"),
        ('FanAnglesDeg="-30"', "FanAnglesDeg must be 2 numbers"),
        ('NumberOfThreads="two"', "NumberOfThreads must be an integer"),
    ],
)
def test_bad_vectors_and_scalars(tmp_path, attributes, message):
    with pytest.raises(DeviceSetError, match=message):
        read_device_set(_write(tmp_path, _config_with_reconstruction(attributes)))


def test_importance_mask_mode_requires_a_file(tmp_path):
    path = _write(tmp_path, _config_with_reconstruction('CompoundingMode="IMPORTANCEMASK"'))
    with pytest.raises(DeviceSetError, match="ImportanceMaskFilename is required when CompoundingMode is IMPORTANCEMASK"):
        read_device_set(path)


def test_fill_holes_without_hole_filling(tmp_path):
    path = _write(tmp_path, _config_with_reconstruction('FillHoles="ON"'))
    with pytest.raises(DeviceSetError, match="FillHoles ON but no HoleFilling element"):
        read_device_set(path)


@pytest.mark.parametrize(
    "element, message",
    [
        ('<HoleFillingElement Size="3"/>', "HoleFillingElement Type is required; allowed values: GAUSSIAN"),
        ('<HoleFillingElement Type="SPLINE"/>', "HoleFillingElement Type is 'SPLINE'; allowed values: GAUSSIAN"),
        ('<HoleFillingElement Type="STICK" StickLengthLimit="9"/>', "NumberOfSticksToUse is required for Type STICK"),
        ('<HoleFillingElement Type="GAUSSIAN" Size="3" MinimumKnownVoxelsRatio="0.5"/>', "Stdev is required for Type GAUSSIAN"),
        ('<HoleFillingElement Type="NEAREST_NEIGHBOR" Size="3"/>', "MinimumKnownVoxelsRatio is required for Type NEAREST_NEIGHBOR"),
        ('<HoleFillingElement Type="STICK" StickLengthLimit="9.5" NumberOfSticksToUse="1"/>', "StickLengthLimit must be an integer"),
    ],
)
def test_bad_hole_filling_element(tmp_path, element, message):
    path = _write(tmp_path, _config_with_reconstruction('FillHoles="ON"', f"<HoleFilling>{element}</HoleFilling>"))
    with pytest.raises(DeviceSetError, match=message):
        read_device_set(path)
