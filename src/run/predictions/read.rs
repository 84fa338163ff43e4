//! Predictions files read into named outputs: every dataset of an HDF5 file (nested groups,
//! as kipoi's HDF5 writer makes them: `preds/b`), every column of a TSV or CSV file, every array
//! of an NPY or NPZ file, or a text file's lines. Numbers are read as f64 (their type kept by
//! name), text as strings.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::predictions::Format;

/// The outputs of one file, by name.
pub type Outputs = BTreeMap<String, Output>;

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<usize>,
    /// `float32`, `int64`, `bool`, `string`; `number` for a TSV/CSV column of numbers.
    pub dtype: String,
    pub data: Data,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// In C order; booleans as 0 and 1.
    Numbers(Vec<f64>),
    Text(Vec<String>),
}

/// Why a predictions file could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("`{path}` does not exist: the command wrote no predictions there")]
    Missing { path: PathBuf },
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not an HDF5 file kipoi's reader would take")]
    Hdf5 {
        path: PathBuf,
        #[source]
        source: hdf5_metno::Error,
    },
    #[error("`{path}` does not parse as {format}: {why}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        why: String,
    },
    #[error("`{path}` holds no output at all")]
    Empty { path: PathBuf },
}

/// Reads `path` as `format`.
pub fn read(path: &Path, format: Format) -> Result<Outputs, ReadError> {
    if !path.exists() {
        return Err(ReadError::Missing {
            path: path.to_path_buf(),
        });
    }
    let outputs = match format {
        Format::Hdf5 => hdf5(path)?,
        Format::Npy => {
            // One array, named the same in the predictions and in their reference.
            let bytes = bytes(path)?;
            let array = npy(&bytes).map_err(|why| parse(path, "NPY", why))?;
            BTreeMap::from([("array".to_string(), array)])
        }
        Format::Npz => npz(path)?,
        Format::Tsv => table(path, &text(path)?, '\t', "TSV")?,
        Format::Csv => table(path, &text(path)?, ',', "CSV")?,
        Format::Text => {
            let name = "lines".to_string();
            let lines: Vec<String> = text(path)?.lines().map(str::to_string).collect();
            let output = Output {
                shape: vec![lines.len()],
                dtype: "text".into(),
                data: Data::Text(lines),
            };
            BTreeMap::from([(name, output)])
        }
    };
    if outputs.is_empty() {
        return Err(ReadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(outputs)
}

fn parse(path: &Path, format: &'static str, why: String) -> ReadError {
    ReadError::Parse {
        path: path.to_path_buf(),
        format,
        why,
    }
}

fn bytes(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn text(path: &Path) -> Result<String, ReadError> {
    let bytes = bytes(path)?;
    String::from_utf8(bytes).map_err(|e| {
        parse(
            path,
            "text",
            format!("it is not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// HDF5

fn hdf5(path: &Path) -> Result<Outputs, ReadError> {
    let failed = |source| ReadError::Hdf5 {
        path: path.to_path_buf(),
        source,
    };
    // The HDF5 library's own error stack printing is off: the error says it once.
    hdf5_metno::silence_errors(true);
    let file = hdf5_metno::File::open(path).map_err(failed)?;
    let mut outputs = BTreeMap::new();
    let mut groups = vec![file.as_group().map_err(failed)?];
    while let Some(group) = groups.pop() {
        for dataset in group.datasets().map_err(failed)? {
            let name = dataset.name().trim_start_matches('/').to_string();
            let output = dataset_output(&dataset).map_err(|why| parse(path, "HDF5", why))?;
            outputs.insert(name, output);
        }
        groups.extend(group.groups().map_err(failed)?);
    }
    Ok(outputs)
}

/// One dataset: numbers (any integer, float or bool type) or strings (variable length).
fn dataset_output(dataset: &hdf5_metno::Dataset) -> Result<Output, String> {
    use hdf5_metno::types::{FloatSize, IntSize, TypeDescriptor as T, VarLenAscii, VarLenUnicode};
    let name = dataset.name();
    let shape = dataset.shape();
    let descriptor = dataset
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| format!("dataset `{name}` has a type the runner cannot read: {e}"))?;
    let bits = |size: IntSize| match size {
        IntSize::U1 => 8,
        IntSize::U2 => 16,
        IntSize::U4 => 32,
        IntSize::U8 => 64,
    };
    let read_err = |e: hdf5_metno::Error| format!("dataset `{name}` cannot be read: {e}");
    let (dtype, data) = match &descriptor {
        T::Integer(size) => (
            format!("int{}", bits(*size)),
            Data::Numbers(dataset.read_raw::<f64>().map_err(read_err)?),
        ),
        T::Unsigned(size) => (
            format!("uint{}", bits(*size)),
            Data::Numbers(dataset.read_raw::<f64>().map_err(read_err)?),
        ),
        T::Float(size) => (
            match size {
                FloatSize::U4 => "float32".to_string(),
                FloatSize::U8 => "float64".to_string(),
                #[allow(unreachable_patterns)]
                other => format!("float{other:?}"),
            },
            Data::Numbers(dataset.read_raw::<f64>().map_err(read_err)?),
        ),
        T::Boolean => (
            "bool".to_string(),
            Data::Numbers(
                dataset
                    .read_raw::<bool>()
                    .map_err(read_err)?
                    .into_iter()
                    .map(|b| if b { 1.0 } else { 0.0 })
                    .collect(),
            ),
        ),
        T::VarLenUnicode => (
            "string".to_string(),
            Data::Text(
                dataset
                    .read_raw::<VarLenUnicode>()
                    .map_err(read_err)?
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ),
        ),
        T::VarLenAscii => (
            "string".to_string(),
            Data::Text(
                dataset
                    .read_raw::<VarLenAscii>()
                    .map_err(read_err)?
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ),
        ),
        other => {
            return Err(format!(
                "dataset `{name}` is of type {other}, which the runner does not compare \
                 (numbers, booleans and variable-length strings it does)"
            ))
        }
    };
    Ok(Output { shape, dtype, data })
}

// ---------------------------------------------------------------------------------------------
// NPY and NPZ

/// One NPY array: version 1 to 3 headers, little- or big-endian numbers, booleans, and
/// fixed-length strings (`<U`, `|S`); Fortran order is turned into C order.
pub fn npy(bytes: &[u8]) -> Result<Output, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("it does not start with NPY's magic bytes".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("NPY version {v} is unknown")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("its header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "its header is not text")?;
    let descr = header_value(header, "descr").ok_or("its header has no `descr`")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_value(header, "fortran_order").is_some_and(|v| v.starts_with("True"));
    let shape_text = header_value(header, "shape").ok_or("its header has no `shape`")?;
    let shape = parse_shape(shape_text)?;
    let count: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    let (order, kind, size) = split_descr(descr)?;
    let need = count
        .checked_mul(size)
        .ok_or("its shape is too large to hold")?;
    if body.len() < need {
        return Err(format!(
            "it is cut short: its shape {shape:?} needs {need} bytes of data, it has {}",
            body.len()
        ));
    }
    let big = order == '>';
    let word = |i: usize| &body[i * size..(i + 1) * size];
    let (dtype, data) = match (kind, size) {
        ('f', 4) => (
            "float32".to_string(),
            Data::Numbers(
                (0..count)
                    .map(|i| f64::from(f32::from_bits(uint(word(i), big) as u32)))
                    .collect(),
            ),
        ),
        ('f', 8) => (
            "float64".to_string(),
            Data::Numbers(
                (0..count)
                    .map(|i| f64::from_bits(uint(word(i), big)))
                    .collect(),
            ),
        ),
        ('i', 1 | 2 | 4 | 8) => (
            format!("int{}", size * 8),
            Data::Numbers(
                (0..count)
                    .map(|i| {
                        let shift = 64 - size * 8;
                        (((uint(word(i), big) << shift) as i64) >> shift) as f64
                    })
                    .collect(),
            ),
        ),
        ('u', 1 | 2 | 4 | 8) => (
            format!("uint{}", size * 8),
            Data::Numbers((0..count).map(|i| uint(word(i), big) as f64).collect()),
        ),
        ('b', 1) => (
            "bool".to_string(),
            Data::Numbers(
                (0..count)
                    .map(|i| if body[i] != 0 { 1.0 } else { 0.0 })
                    .collect(),
            ),
        ),
        ('U', _) => (
            "string".to_string(),
            Data::Text(
                (0..count)
                    .map(|i| {
                        word(i)
                            .chunks(4)
                            .map(|c| uint(c, big) as u32)
                            .take_while(|&c| c != 0)
                            .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                            .collect()
                    })
                    .collect(),
            ),
        ),
        ('S', _) => (
            "bytes".to_string(),
            Data::Text(
                (0..count)
                    .map(|i| {
                        let w = word(i);
                        let end = w.iter().position(|&b| b == 0).unwrap_or(w.len());
                        String::from_utf8_lossy(&w[..end]).into_owned()
                    })
                    .collect(),
            ),
        ),
        _ => {
            return Err(format!(
                "its type `{descr}` is not one the runner compares (floats, integers, booleans, \
                 strings)"
            ))
        }
    };
    let data = if fortran && shape.len() > 1 {
        to_c_order(data, &shape)
    } else {
        data
    };
    Ok(Output { shape, dtype, data })
}

/// The text after `'key':` in an NPY header dict, up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    if rest.starts_with('(') {
        return rest.find(')').map(|end| &rest[..=end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("its shape `{text}` is no tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("its shape `{text}` holds `{d}`"))
        })
        .collect()
}

/// `<f4` -> ('<', 'f', 4); `<U5` -> ('<', 'U', 20) (UTF-32 code units).
fn split_descr(descr: &str) -> Result<(char, char, usize), String> {
    let mut chars = descr.chars();
    let order = chars.next().ok_or("its type is empty")?;
    let (order, kind) = if matches!(order, '<' | '>' | '|' | '=') {
        (order, chars.next().ok_or("its type is cut short")?)
    } else {
        ('<', order)
    };
    let n: usize = chars
        .as_str()
        .parse()
        .map_err(|_| format!("its type `{descr}` has no size"))?;
    let size = if kind == 'U' { n * 4 } else { n };
    if size == 0 {
        return Err(format!("its type `{descr}` has size 0"));
    }
    Ok((order, kind, size))
}

/// Up to 8 bytes as an unsigned number.
fn uint(word: &[u8], big: bool) -> u64 {
    let mut value = 0u64;
    if big {
        for &b in word {
            value = (value << 8) | u64::from(b);
        }
    } else {
        for &b in word.iter().rev() {
            value = (value << 8) | u64::from(b);
        }
    }
    value
}

/// Column-major data put in row-major order.
fn to_c_order(data: Data, shape: &[usize]) -> Data {
    let count: usize = shape.iter().product();
    let c_of_f = |f: usize| {
        // The index of element `f` (Fortran order) in C order.
        let mut rest = f;
        let mut index = vec![0; shape.len()];
        for (d, &n) in shape.iter().enumerate() {
            index[d] = rest % n;
            rest /= n;
        }
        index.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
    };
    match data {
        Data::Numbers(v) => {
            let mut out = vec![0.0; count];
            for (f, x) in v.into_iter().enumerate() {
                out[c_of_f(f)] = x;
            }
            Data::Numbers(out)
        }
        Data::Text(v) => {
            let mut out = vec![String::new(); count];
            for (f, x) in v.into_iter().enumerate() {
                out[c_of_f(f)] = x;
            }
            Data::Text(out)
        }
    }
}

fn npz(path: &Path) -> Result<Outputs, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| parse(path, "NPZ", format!("not a zip: {e}")))?;
    let mut outputs = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| parse(path, "NPZ", e.to_string()))?;
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| parse(path, "NPZ", format!("`{name}`: {e}")))?;
        let array = npy(&bytes).map_err(|why| parse(path, "NPZ", format!("`{name}`: {why}")))?;
        outputs.insert(name.trim_end_matches(".npy").to_string(), array);
    }
    Ok(outputs)
}

// ---------------------------------------------------------------------------------------------
// TSV and CSV

/// A header line, then rows: each column an output. A column whose every cell reads as a number
/// (`NaN`, `nan` and an empty cell are NaN) is numbers; any other is text.
fn table(path: &Path, text: &str, sep: char, format: &'static str) -> Result<Outputs, ReadError> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let header = lines
        .next()
        .ok_or_else(|| parse(path, format, "it is empty: no header line".into()))?;
    let names = cells(header, sep);
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for (n, line) in lines.enumerate() {
        let row = cells(line, sep);
        if row.len() != names.len() {
            return Err(parse(
                path,
                format,
                format!(
                    "line {} has {} cells, the header {}",
                    n + 2,
                    row.len(),
                    names.len()
                ),
            ));
        }
        for (column, cell) in columns.iter_mut().zip(row) {
            column.push(cell);
        }
    }
    let mut outputs = BTreeMap::new();
    for (name, column) in names.into_iter().zip(columns) {
        let numbers: Option<Vec<f64>> = column.iter().map(|c| number(c)).collect();
        let output = match numbers {
            Some(numbers) => Output {
                shape: vec![numbers.len()],
                dtype: "number".into(),
                data: Data::Numbers(numbers),
            },
            None => Output {
                shape: vec![column.len()],
                dtype: "text".into(),
                data: Data::Text(column),
            },
        };
        outputs.insert(name, output);
    }
    Ok(outputs)
}

fn number(cell: &str) -> Option<f64> {
    match cell.trim() {
        "" | "NaN" | "nan" | "NA" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

/// A line's cells; double quotes around a cell (CSV) are taken off, `""` inside is a quote.
fn cells(line: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => out.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    out.push(cell);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An NPY v1 file of float32 in the given order.
    pub(crate) fn npy_f4(shape: &[usize], values: &[f32], fortran: bool) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_text = if shape.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': {}, 'shape': {shape_text}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn npy_arrays_read_in_c_order() {
        let c = npy(&npy_f4(&[2, 3], &[1., 2., 3., 4., 5., 6.], false)).unwrap();
        assert_eq!(c.shape, [2, 3]);
        assert_eq!(c.dtype, "float32");
        assert_eq!(c.data, Data::Numbers(vec![1., 2., 3., 4., 5., 6.]));
        // The same matrix, stored column by column.
        let f = npy(&npy_f4(&[2, 3], &[1., 4., 2., 5., 3., 6.], true)).unwrap();
        assert_eq!(f.data, c.data);
        assert!(npy(b"not an npy file").unwrap_err().contains("magic"));
        let mut cut = npy_f4(&[2, 3], &[1., 2., 3., 4., 5., 6.], false);
        cut.truncate(cut.len() - 4);
        assert!(npy(&cut).unwrap_err().contains("cut short"), "{cut:?}");
    }

    #[test]
    fn tables_read_numbers_and_text_by_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tsv");
        std::fs::write(&path, "name\tscore\tlabel\na\t1.5\tx\nb\tNaN\ty\n").unwrap();
        let outputs = read(&path, Format::Tsv).unwrap();
        let Data::Numbers(score) = &outputs["score"].data else {
            panic!("numbers")
        };
        assert!(score[0] == 1.5 && score[1].is_nan(), "{score:?}");
        assert_eq!(outputs["label"].dtype, "text");
        std::fs::write(&path, "a\tb\n1\n").unwrap();
        let err = read(&path, Format::Tsv).unwrap_err().to_string();
        assert!(
            err.contains("line 2 has 1 cells") && err.contains("p.tsv"),
            "{err}"
        );
        let csv = dir.path().join("p.csv");
        std::fs::write(&csv, "\"a,b\",c\n\"x,\"\"y\"\"\",2\n").unwrap();
        let outputs = read(&csv, Format::Csv).unwrap();
        assert_eq!(outputs["a,b"].data, Data::Text(vec!["x,\"y\"".into()]));
    }

    /// A file as kipoi's HDF5 writer makes one: nested groups, chunked and gzip-compressed
    /// datasets, variable-length strings.
    #[test]
    fn hdf5_datasets_in_nested_groups_read_with_their_types() {
        use hdf5_metno::types::VarLenUnicode;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.h5");
        {
            let file = hdf5_metno::File::create(&path).unwrap();
            let preds = file.create_group("preds").unwrap();
            preds
                .new_dataset_builder()
                .chunk((2, 2))
                .deflate(4)
                .with_data(&ndarray::arr2(&[[1.5f32, 2.0], [3.0, f32::NAN]]))
                .create("a")
                .unwrap();
            preds
                .new_dataset_builder()
                .with_data(&ndarray::arr1(&[7i64, -8]))
                .create("b")
                .unwrap();
            let names: Vec<VarLenUnicode> = ["x", "é"].iter().map(|s| s.parse().unwrap()).collect();
            file.new_dataset_builder()
                .with_data(&ndarray::arr1(&names))
                .create("metadata/name")
                .unwrap();
        }
        let outputs = read(&path, Format::Hdf5).unwrap();
        assert_eq!(
            outputs.keys().collect::<Vec<_>>(),
            ["metadata/name", "preds/a", "preds/b"]
        );
        let a = &outputs["preds/a"];
        assert_eq!(
            (a.shape.as_slice(), a.dtype.as_str()),
            ([2, 2].as_slice(), "float32")
        );
        let Data::Numbers(values) = &a.data else {
            panic!("numbers")
        };
        assert_eq!(values[..3], [1.5, 2.0, 3.0]);
        assert!(values[3].is_nan());
        assert_eq!(outputs["preds/b"].dtype, "int64");
        assert_eq!(outputs["preds/b"].data, Data::Numbers(vec![7.0, -8.0]));
        assert_eq!(
            outputs["metadata/name"].data,
            Data::Text(vec!["x".into(), "é".into()])
        );
    }

    #[test]
    fn npz_arrays_are_outputs_by_name() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.npz");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("preds.npy", deflated).unwrap();
        zip.write_all(&npy_f4(&[2], &[1.0, 2.0], false)).unwrap();
        zip.start_file("inputs.npy", deflated).unwrap();
        zip.write_all(&npy_f4(&[1], &[3.0], false)).unwrap();
        zip.finish().unwrap();
        let outputs = read(&path, Format::Npz).unwrap();
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["inputs", "preds"]);
        assert_eq!(outputs["preds"].data, Data::Numbers(vec![1.0, 2.0]));
        std::fs::write(&path, "not a zip").unwrap();
        let err = read(&path, Format::Npz).unwrap_err().to_string();
        assert!(err.contains("p.npz") && err.contains("not a zip"), "{err}");
    }

    #[test]
    fn a_missing_or_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.h5");
        let err = read(&path, Format::Hdf5).unwrap_err();
        assert!(matches!(err, ReadError::Missing { .. }), "{err}");
        std::fs::write(&path, "not hdf5").unwrap();
        let err = crate::error_chain::chain(&read(&path, Format::Hdf5).unwrap_err());
        assert!(
            err.contains("p.h5") && err.contains("not an HDF5 file"),
            "{err}"
        );
    }
}
