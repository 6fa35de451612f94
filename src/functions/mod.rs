//! The DataFusion functions of a GC plan, registered on every session that runs one:
//!
//! - `blobgc_fingerprint(id)`: the id's [`fingerprint`] (`UInt64`), all a filter needs of it.
//! - `blobgc_shard(fingerprint, shards)`: the filter shard of a fingerprint ([`shard_of`]).
//! - `blobgc_bloom_build(fingerprint, num_bits, num_hashes, seed_hex, fpp)`: aggregate; the
//!   filter shard of the fingerprints grouped into it, folded to the distinct ids it holds at
//!   `fpp`, encoded, with the count of ids inserted: `{filter, ids}`. The plan groups by shard
//!   after routing each shard's fingerprints to one task, so a shard is built whole in one place. (In-process, the filter is built from the
//!   references' fingerprints instead: [`crate::spill`].)
//! - `blobgc_store_shard(built, shard_dir)`: writes a shard `blobgc_bloom_build` built by its
//!   SHA-256 into `shard_dir`, in the task that built it; returns `{checksum, bits, ones, ids}`.
//! - `blobgc_bloom_contains(fingerprint, manifest_location, sha256)`: whether the stored filter
//!   may hold the id; the manifest is read once per process, a shard when first needed, and
//!   each is checked against its checksum.
//! - `blobgc_distinct(fingerprint)`: aggregate; the distinct fingerprints, estimated by the
//!   spill's sketch, so a cluster sizes a filter as this process does.
//! - `blobgc_id_class(id, family, current_generation)`: [`IdClass`] of a listed id as `UInt8`.
//! - `blobgc_canonical_id(id)`: the fully canonical spelling of an id (`1_0557_x` is `1_557_x`), for
//!   exact joins that must match every spelling of a reference.
//!
//! Parameters travel as literal arguments, not as function state, so a plan shipped to
//! another process by name only (Ballista) still carries them; the filter itself travels by
//! location, never as a literal.

mod build;
mod sketch;

use crate::filter::{Bloom, StoredFilter, fingerprint, load_cached, shard_of};
use crate::generation::GenerationRule;
use crate::store::Location;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, StringViewBuilder, StructArray,
    UInt8Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Fields, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, lit,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

pub use build::BLOOM_BUILD;
pub const BLOOM_CONTAINS: &str = "blobgc_bloom_contains";
pub const ID_CLASS: &str = "blobgc_id_class";
pub const CANONICAL_ID: &str = "blobgc_canonical_id";
pub const FINGERPRINT: &str = "blobgc_fingerprint";
pub const SHARD: &str = "blobgc_shard";
pub const STORE_SHARD: &str = "blobgc_store_shard";

/// Registers blobgc's functions on a session.
pub fn register(ctx: &SessionContext) {
    aggregate_functions()
        .into_iter()
        .for_each(|f| ctx.register_udaf(f));
    scalar_functions()
        .into_iter()
        .for_each(|f| ctx.register_udf(f));
}

pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        bloom_contains(),
        id_class(),
        canonical_id(),
        fingerprint_udf(),
        shard(),
        store_shard(),
    ]
}

pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![bloom_build(), distinct()]
}

pub fn canonical_id() -> ScalarUDF {
    ScalarUDF::from(CanonicalId {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

pub fn bloom_build() -> AggregateUDF {
    AggregateUDF::from(build::BloomBuild::new())
}

pub fn distinct() -> AggregateUDF {
    AggregateUDF::from(sketch::Distinct::new())
}

/// Volatile, though it is not: the optimizer must not move it. A filter on its result was
/// pushed below the probe's routing by shard into the listing's scan, whose tasks then loaded
/// every shard of the filter.
pub fn bloom_contains() -> ScalarUDF {
    ScalarUDF::from(BloomContains {
        signature: Signature::any(3, Volatility::Volatile),
    })
}

/// Whether the filter stored with manifest `location` and `checksum` may hold `id`.
pub fn in_stored_filter(id: Expr, location: String, checksum: String) -> Expr {
    let fp = fingerprint_udf().call(vec![id]);
    bloom_contains().call(vec![fp, lit(location), lit(checksum)])
}

pub fn fingerprint_udf() -> ScalarUDF {
    ScalarUDF::from(Fingerprint {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

pub fn shard() -> ScalarUDF {
    ScalarUDF::from(Shard {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// Volatile: it writes, so the optimizer must neither drop nor repeat it.
pub fn store_shard() -> ScalarUDF {
    ScalarUDF::from(StoreShard {
        signature: Signature::any(2, Volatility::Volatile),
    })
}

pub fn id_class() -> ScalarUDF {
    ScalarUDF::from(IdClassUdf {
        signature: Signature::any(3, Volatility::Immutable),
    })
}

/// Calls `f` on each id of a string column (Utf8 on Ballista, Utf8View in DataFusion).
pub(crate) fn for_each_id<'a>(
    array: &'a ArrayRef,
    mut f: impl FnMut(Option<&'a str>),
) -> Result<()> {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(&mut f),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(&mut f),
        DataType::Utf8View => array.as_string_view().iter().for_each(&mut f),
        other => return exec_err!("blob ids must be strings, got a {other} column"),
    }
    Ok(())
}

fn check_id_type(t: &DataType, function: &str) -> Result<()> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        other => exec_err!("{function}: blob ids must be strings, got {other}"),
    }
}

fn literal(expr: &Arc<dyn PhysicalExpr>, what: &str) -> Result<ScalarValue> {
    expr.downcast_ref::<Literal>()
        .map(|l| l.value().clone())
        .ok_or_else(|| exec_datafusion_err!("{BLOOM_BUILD}: {what} must be a literal"))
}

pub(crate) fn scalar_u64(v: &ScalarValue, what: &str) -> Result<u64> {
    match v.cast_to(&DataType::UInt64)? {
        ScalarValue::UInt64(Some(n)) => Ok(n),
        other => exec_err!("{what} must be a non-null integer, got {other}"),
    }
}

pub(crate) fn scalar_str(v: &ScalarValue, what: &str) -> Result<String> {
    match v.try_as_str() {
        Some(Some(s)) => Ok(s.to_string()),
        _ => exec_err!("{what} must be a non-null string, got {v}"),
    }
}

pub(crate) fn scalar_arg(v: &ColumnarValue, what: &str) -> Result<ScalarValue> {
    match v {
        ColumnarValue::Scalar(s) => Ok(s.clone()),
        ColumnarValue::Array(_) => exec_err!("{what} must be a constant"),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BloomContains {
    signature: Signature,
}

impl ScalarUDFImpl for BloomContains {
    fn name(&self) -> &str {
        BLOOM_CONTAINS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_fingerprint_type(&args[0], BLOOM_CONTAINS)?;
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let location = scalar_str(
            &scalar_arg(&args.args[1], "filter location")?,
            "filter location",
        )?;
        let checksum = scalar_str(
            &scalar_arg(&args.args[2], "filter checksum")?,
            "filter checksum",
        )?;
        let s3 = crate::registry::job_s3(&args.config_options);
        let filter =
            load_cached(&location, &checksum, &s3).map_err(|e| exec_datafusion_err!("{e}"))?;
        let fps = args.args[0].to_array(args.number_rows)?;
        let fps = fingerprints(&fps)?;
        let present: Vec<u64> = fps.iter().flatten().collect();
        let found = filter
            .contains_fingerprints(&present)
            .map_err(|e| exec_datafusion_err!("{e}"))?;
        let mut found = found.into_iter();
        // A null id cannot be deleted by name: report it referenced, the safe answer (so is
        // a missing answer, which cannot happen: one answer per non-null fingerprint).
        let out: BooleanArray = fps
            .iter()
            .map(|fp| Some(fp.is_none() || found.next().unwrap_or(true)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn check_fingerprint_type(t: &DataType, function: &str) -> Result<()> {
    match t {
        DataType::UInt64 => Ok(()),
        other => exec_err!("{function}: fingerprints are UInt64 ({FINGERPRINT}), got {other}"),
    }
}

fn fingerprints(array: &ArrayRef) -> Result<&UInt64Array> {
    array.as_primitive_opt::<UInt64Type>().ok_or_else(|| {
        exec_datafusion_err!("fingerprints must be UInt64, got {}", array.data_type())
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Fingerprint {
    signature: Signature,
}

impl ScalarUDFImpl for Fingerprint {
    fn name(&self) -> &str {
        FINGERPRINT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_id_type(&args[0], FINGERPRINT)?;
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ids = args.args[0].to_array(args.number_rows)?;
        let mut out = Vec::with_capacity(ids.len());
        for_each_id(&ids, |id| out.push(id.map(fingerprint)))?;
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(out))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Shard {
    signature: Signature,
}

impl ScalarUDFImpl for Shard {
    fn name(&self) -> &str {
        SHARD
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_fingerprint_type(&args[0], SHARD)?;
        Ok(DataType::UInt32)
    }

    /// A null fingerprint (a null id) is put in shard 0, where nothing inserts it.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let count = scalar_u64(&scalar_arg(&args.args[1], "shard count")?, "shard count")?;
        let count = u32::try_from(count)
            .ok()
            .filter(|c| c.is_power_of_two())
            .ok_or_else(|| exec_datafusion_err!("{SHARD}: {count} shards is not a power of two"))?;
        let fps = args.args[0].to_array(args.number_rows)?;
        let out: UInt32Array = fingerprints(&fps)?
            .iter()
            .map(|fp| Some(fp.map_or(0, |fp| shard_of(fp, count) as u32)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StoreShard {
    signature: Signature,
}

impl StoreShard {
    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("checksum", DataType::Utf8, false),
            Field::new("bits", DataType::UInt64, false),
            Field::new("ones", DataType::UInt64, false),
            Field::new("ids", DataType::UInt64, false),
        ])
    }
}

impl ScalarUDFImpl for StoreShard {
    fn name(&self) -> &str {
        STORE_SHARD
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let dir = scalar_str(
            &scalar_arg(&args.args[1], "shard directory")?,
            "shard directory",
        )?;
        let s3 = crate::registry::job_s3(&args.config_options);
        let dir = Location::parse(&dir, "shard directory", &s3)
            .map_err(|e| exec_datafusion_err!("{e}"))?;
        let built = args.args[0].to_array(args.number_rows)?;
        let not_built = || exec_datafusion_err!("{STORE_SHARD}: shards are {BLOOM_BUILD}'s");
        let built = built.as_struct_opt().ok_or_else(not_built)?;
        let encoded = built
            .column(0)
            .as_binary_opt::<i32>()
            .ok_or_else(not_built)?;
        let ids = Arc::clone(built.column(1));
        if ids.data_type() != &DataType::UInt64 {
            return Err(not_built());
        }
        let (mut checksums, mut bits, mut ones) = (Vec::new(), Vec::new(), Vec::new());
        for bytes in encoded.iter() {
            let bytes = bytes.ok_or_else(|| exec_datafusion_err!("{STORE_SHARD}: a null shard"))?;
            let shard = Bloom::decode(bytes).map_err(|e| exec_datafusion_err!("{e}"))?;
            let write = StoredFilter::write_shard(&dir, bytes.to_vec());
            let checksum = crate::store::block_on("writing a filter shard", write)
                .and_then(|written| written)
                .map_err(|e| exec_datafusion_err!("{e}"))?;
            checksums.push(checksum);
            bits.push(shard.params().num_bits);
            ones.push(shard.ones());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(checksums)),
            Arc::new(UInt64Array::from(bits)),
            Arc::new(UInt64Array::from(ones)),
            ids,
        ];
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            Self::fields(),
            columns,
            None,
        )?)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IdClassUdf {
    signature: Signature,
}

impl ScalarUDFImpl for IdClassUdf {
    fn name(&self) -> &str {
        ID_CLASS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_id_type(&args[0], ID_CLASS)?;
        Ok(DataType::UInt8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let family = scalar_u64(&scalar_arg(&args.args[1], "family")?, "family")?;
        let rule = GenerationRule {
            family: u32::try_from(family)
                .map_err(|_| exec_datafusion_err!("family {family} out of range"))?,
            current_generation: scalar_u64(
                &scalar_arg(&args.args[2], "current generation")?,
                "current generation",
            )?,
        };
        let ids = args.args[0].to_array(args.number_rows)?;
        let mut out = Vec::with_capacity(ids.len());
        for_each_id(&ids, |id| out.push(id.map(|id| rule.classify(id) as u8)))?;
        Ok(ColumnarValue::Array(Arc::new(UInt8Array::from(out))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CanonicalId {
    signature: Signature,
}

impl ScalarUDFImpl for CanonicalId {
    fn name(&self) -> &str {
        CANONICAL_ID
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_id_type(&args[0], CANONICAL_ID)?;
        Ok(DataType::Utf8View)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ids = args.args[0].to_array(args.number_rows)?;
        let mut out = StringViewBuilder::with_capacity(ids.len());
        for_each_id(&ids, |id| match id {
            Some(id) => out.append_value(crate::filter::fully_canonical(id)),
            None => out.append_null(),
        })?;
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
