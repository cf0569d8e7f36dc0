//! Device sensors read from sysfs: temperatures (`class/thermal`,
//! `class/hwmon`) and the Linux IIO sensors roadside boxes carry
//! (`bus/iio/devices`: accelerometer, gyroscope, magnetometer, humidity,
//! pressure, temperature), with scale and offset applied and converted to
//! the units their names say. The root is configurable (`telemetry.sysfs_root`)
//! so tests use a fixture tree. A missing sensor is simply absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Temperatures in °C from `class/thermal/thermal_zone*/{type,temp}` and
/// `class/hwmon/hwmon*/{name,temp*_input}` (millidegrees in sysfs).
pub fn temperatures(sysfs_root: &Path) -> BTreeMap<String, f32> {
    let mut found = BTreeMap::new();
    let millidegrees = |p: PathBuf| read_number(&p).map(|m| (m / 1000.0) as f32);
    for zone in sorted_entries(&sysfs_root.join("class/thermal"), "thermal_zone") {
        let name = read_text(&zone.join("type")).unwrap_or_else(|| file_name(&zone));
        if let Some(celsius) = millidegrees(zone.join("temp")) {
            found.insert(format!("thermal/{name}"), celsius);
        }
    }
    for hwmon in sorted_entries(&sysfs_root.join("class/hwmon"), "hwmon") {
        let chip = read_text(&hwmon.join("name")).unwrap_or_else(|| file_name(&hwmon));
        for input in sorted_entries(&hwmon, "temp") {
            if let Some(sensor) = file_name(&input).strip_suffix("_input") {
                if let Some(celsius) = millidegrees(input.clone()) {
                    found.insert(format!("hwmon/{chip}/{sensor}"), celsius);
                }
            }
        }
    }
    found
}

/// IIO channel types we report: sysfs name, the name we publish, and the
/// factor from the IIO ABI's unit to the published one.
const IIO_CHANNELS: &[(&str, &str, f64)] = &[
    ("accel", "accel_m_s2", 1.0),          // m/s²
    ("anglvel", "gyro_rad_s", 1.0),        // rad/s
    ("magn", "magn_gauss", 1.0),           // gauss
    ("humidityrelative", "humidity_percent", 0.001), // milli-percent
    ("pressure", "pressure_kpa", 1.0),     // kPa
    ("temp", "temp_c", 0.001),             // milli-°C
];

/// IIO device name → reading name → value, e.g.
/// `{"bme280": {"humidity_percent": 41.2, "pressure_kpa": 100.9, "temp_c": 21.5}}`.
/// An axis goes into the name: `accel_x_m_s2`.
pub fn iio(sysfs_root: &Path) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut devices = BTreeMap::new();
    for device in sorted_entries(&sysfs_root.join("bus/iio/devices"), "iio:device") {
        let mut name = read_text(&device.join("name")).unwrap_or_else(|| file_name(&device));
        if devices.contains_key(&name) {
            name = format!("{name}:{}", file_name(&device));
        }
        let mut readings = BTreeMap::new();
        for file in sorted_entries(&device, "in_") {
            let file = file_name(&file);
            let Some((channel, processed)) = file.strip_suffix("_raw").map(|c| (c, false)).or_else(|| file.strip_suffix("_input").map(|c| (c, true)))
            else {
                continue;
            };
            let channel = &channel["in_".len()..];
            // `accel_x` → type `accel`, axis `x`; `temp` → no axis.
            let (kind, axis) = match channel.rsplit_once('_') {
                Some((kind, axis)) if matches!(axis, "x" | "y" | "z") => (kind, Some(axis)),
                _ => (channel, None),
            };
            let Some((_, published, factor)) = IIO_CHANNELS.iter().find(|(k, _, _)| *k == kind) else { continue };
            let Some(value) = read_number(&device.join(&file)) else { continue };
            let value = if processed {
                value
            } else {
                // Per-channel attributes win over the type's shared ones.
                let attribute = |suffix: &str| {
                    axis.and_then(|a| read_number(&device.join(format!("in_{kind}_{a}_{suffix}"))))
                        .or_else(|| read_number(&device.join(format!("in_{kind}_{suffix}"))))
                };
                (value + attribute("offset").unwrap_or(0.0)) * attribute("scale").unwrap_or(1.0)
            };
            let key = match axis {
                Some(axis) => published.replacen('_', &format!("_{axis}_"), 1),
                None => published.to_string(),
            };
            readings.insert(key, value * factor);
        }
        if !readings.is_empty() {
            devices.insert(name, readings);
        }
    }
    devices
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_number(path: &Path) -> Option<f64> {
    read_text(path)?.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn sorted_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| file_name(p).starts_with(prefix)).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Writes a small sysfs tree with one of each sensor kind (for tests).
pub fn write_fixture(root: &Path) -> std::io::Result<()> {
    let files: &[(&str, &str)] = &[
        ("class/thermal/thermal_zone0/type", "cpu-thermal"),
        ("class/thermal/thermal_zone0/temp", "48250"),
        ("class/hwmon/hwmon1/name", "enclosure"),
        ("class/hwmon/hwmon1/temp1_input", "31000"),
        ("class/hwmon/hwmon1/temp1_label", "not a reading"),
        // An accelerometer with a shared scale and a per-axis offset.
        ("bus/iio/devices/iio:device0/name", "lsm6dsl_accel"),
        ("bus/iio/devices/iio:device0/in_accel_x_raw", "100"),
        ("bus/iio/devices/iio:device0/in_accel_y_raw", "-50"),
        ("bus/iio/devices/iio:device0/in_accel_z_raw", "16384"),
        ("bus/iio/devices/iio:device0/in_accel_z_offset", "-20"),
        ("bus/iio/devices/iio:device0/in_accel_scale", "0.000598"),
        ("bus/iio/devices/iio:device1/name", "lsm6dsl_gyro"),
        ("bus/iio/devices/iio:device1/in_anglvel_x_raw", "10"),
        ("bus/iio/devices/iio:device1/in_anglvel_scale", "0.000152716"),
        ("bus/iio/devices/iio:device2/name", "lis3mdl"),
        ("bus/iio/devices/iio:device2/in_magn_x_raw", "1711"),
        ("bus/iio/devices/iio:device2/in_magn_x_scale", "0.000146"),
        // An environment sensor giving processed values.
        ("bus/iio/devices/iio:device3/name", "bme280"),
        ("bus/iio/devices/iio:device3/in_humidityrelative_input", "41200"),
        ("bus/iio/devices/iio:device3/in_pressure_input", "100.912"),
        ("bus/iio/devices/iio:device3/in_temp_input", "21500"),
        // A device with nothing we read.
        ("bus/iio/devices/iio:device4/name", "adc"),
        ("bus/iio/devices/iio:device4/in_voltage0_raw", "1234"),
    ];
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, format!("{content}\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("cctv-sysfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_fixture(&root).unwrap();
        root
    }

    #[test]
    fn temperatures_come_from_thermal_zones_and_hwmon_in_celsius() {
        let root = fixture("temp");
        let t = temperatures(&root);
        assert_eq!(t.get("thermal/cpu-thermal"), Some(&48.25));
        assert_eq!(t.get("hwmon/enclosure/temp1"), Some(&31.0));
        assert_eq!(t.len(), 2);
        assert!(temperatures(&root.join("missing")).is_empty());
    }

    #[test]
    fn iio_readings_have_scale_and_offset_applied_and_units_named() {
        let root = fixture("iio");
        let s = iio(&root);
        let close = |device: &str, key: &str, want: f64| {
            let got = s[device][key];
            assert!((got - want).abs() < 1e-9, "{device}.{key} = {got}, want {want}");
        };
        close("lsm6dsl_accel", "accel_x_m_s2", 100.0 * 0.000598);
        close("lsm6dsl_accel", "accel_y_m_s2", -50.0 * 0.000598);
        close("lsm6dsl_accel", "accel_z_m_s2", (16384.0 - 20.0) * 0.000598);
        close("lsm6dsl_gyro", "gyro_x_rad_s", 10.0 * 0.000152716);
        close("lis3mdl", "magn_x_gauss", 1711.0 * 0.000146);
        close("bme280", "humidity_percent", 41.2);
        close("bme280", "pressure_kpa", 100.912);
        close("bme280", "temp_c", 21.5);
        assert!(!s.contains_key("adc"), "devices without known channels are left out");
        assert!(iio(&root.join("missing")).is_empty());
    }
}
