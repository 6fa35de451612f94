//! The DataFusion functions of a GC plan, registered on every session that runs one:
//!
//! - `blobgc_bloom_build(id, num_bits, num_hashes, seed_hex, fpp)`: aggregate; each partition
//!   builds a partial filter (Partial), partials are OR-merged (Final) and the merged filter is
//!   folded to the distinct ids it holds at `fpp`; the result is the encoded filter, which the
//!   plan writes to storage from the reduce stage itself. (In-process, the filter is built from
//!   the references' fingerprints instead: [`crate::spill`].)
//! - `blobgc_bloom_contains(id, filter_location, sha256)`: whether the stored filter may hold
//!   `id`; the filter is loaded once per process and checked against its checksum.
//! - `blobgc_id_class(id, family, current_generation)`: [`IdClass`] of a listed id as `UInt8`.
//! - `blobgc_canonical_id(id)`: the fully canonical spelling of an id (`1_0557_x` is `1_557_x`), for
//!   exact joins that must match every spelling of a reference.
//!
//! Parameters travel as literal arguments, not as function state, so a plan shipped to
//! another process by name only (Ballista) still carries them; the filter itself travels by
//! location, never as a literal.

use crate::filter::{Bloom, FilterParams, load_cached};
use crate::generation::GenerationRule;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringViewBuilder, UInt8Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

pub const BLOOM_BUILD: &str = "blobgc_bloom_build";
pub const BLOOM_CONTAINS: &str = "blobgc_bloom_contains";
pub const ID_CLASS: &str = "blobgc_id_class";
pub const CANONICAL_ID: &str = "blobgc_canonical_id";

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
    vec![bloom_contains(), id_class(), canonical_id()]
}

pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![bloom_build()]
}

pub fn canonical_id() -> ScalarUDF {
    ScalarUDF::from(CanonicalId {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

pub fn bloom_build() -> AggregateUDF {
    AggregateUDF::from(BloomBuild {
        signature: Signature::any(5, Volatility::Immutable),
    })
}

pub fn bloom_contains() -> ScalarUDF {
    ScalarUDF::from(BloomContains {
        signature: Signature::any(3, Volatility::Immutable),
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
struct BloomBuild {
    signature: Signature,
}

impl AggregateUDFImpl for BloomBuild {
    fn name(&self) -> &str {
        BLOOM_BUILD
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_id_type(&args[0], BLOOM_BUILD)?;
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "filter"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let [_, bits, hashes, seed, fpp] = args.exprs else {
            return exec_err!("{BLOOM_BUILD} takes (id, num_bits, num_hashes, seed_hex, fpp)");
        };
        let fpp = match literal(fpp, "fpp")?.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(f)) if f > 0.0 && f < 1.0 => f,
            other => return exec_err!("{BLOOM_BUILD}: fpp must be in (0, 1), got {other}"),
        };
        let seed_hex = scalar_str(&literal(seed, "seed")?, "seed")?;
        let params = FilterParams {
            num_bits: scalar_u64(&literal(bits, "num_bits")?, "num_bits")?,
            num_hashes: u32::try_from(scalar_u64(&literal(hashes, "num_hashes")?, "num_hashes")?)
                .map_err(|_| exec_datafusion_err!("num_hashes out of range"))?,
            seed: u128::from_str_radix(&seed_hex, 16)
                .map_err(|e| exec_datafusion_err!("seed {seed_hex:?}: {e}"))?,
        };
        let bloom = Bloom::new(params).map_err(|e| exec_datafusion_err!("{e}"))?;
        Ok(Box::new(BloomAccumulator {
            bloom,
            fpp,
            hashes: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct BloomAccumulator {
    bloom: Bloom,
    fpp: f64,
    /// The hashes of the batch being inserted, kept to reuse the allocation.
    hashes: Vec<u64>,
}

impl Accumulator for BloomAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        // Hashed first, inserted after: the inserts fetch their memory ahead.
        self.hashes.clear();
        let (bloom, hashes) = (&self.bloom, &mut self.hashes);
        for_each_id(&values[0], |id| hashes.extend(id.map(|id| bloom.hash(id))))?;
        self.bloom.insert_hashes(&self.hashes);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for partial in states[0].as_binary::<i32>().iter().flatten() {
            self.bloom
                .union_words(partial)
                .map_err(|e| exec_datafusion_err!("merging partial filters: {e}"))?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.bloom.to_le_bytes()))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let encoded = match self.bloom.fit_factor(self.fpp) {
            1 => self.bloom.encode(),
            factor => self
                .bloom
                .fold(factor)
                .map_err(|e| exec_datafusion_err!("{e}"))?
                .encode(),
        };
        Ok(ScalarValue::Binary(Some(encoded)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.bloom.params().size_bytes() as usize
            + self.hashes.capacity() * 8
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
        check_id_type(&args[0], BLOOM_CONTAINS)?;
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
        let bloom =
            load_cached(&location, &checksum, &s3).map_err(|e| exec_datafusion_err!("{e}"))?;
        let ids = args.args[0].to_array(args.number_rows)?;
        let mut hashes = Vec::with_capacity(ids.len() - ids.null_count());
        for_each_id(&ids, |id| hashes.extend(id.map(|id| bloom.hash(id))))?;
        let mut found = bloom.contains_hashes(&hashes);
        // A null id cannot be deleted by name: report it referenced, the safe answer (so is
        // a missing answer, which cannot happen: one hash per non-null id).
        let out: BooleanArray = (0..ids.len())
            .map(|i| Some(ids.is_null(i) || found.next().unwrap_or(true)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
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
